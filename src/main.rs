use std::sync::Arc;

use chatfiles::clock::SystemClock;
use chatfiles::config::{Cli, Command, LogFormat};
use chatfiles::startup::Application;
use tracing_subscriber::EnvFilter;

/// Keeps the memory of large, short-lived buffers (a 1 MiB download read in one go) from
/// piling up. By default glibc raises its mmap threshold after the first such buffer is freed
/// and from then on serves them from per-thread arenas, which keep the memory; with a fixed
/// threshold they come from mmap and go back to the kernel when freed, and a few arenas serve
/// all the blocking threads.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called once, before any other thread
    // exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 * 1024 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 32 * 1024 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn main() -> std::process::ExitCode {
    tune_allocator();
    serve_or_run()
}

#[actix_web::main]
async fn serve_or_run() -> std::process::ExitCode {
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let Cli { command, config } = Cli::from_env_and_args();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    match config.log_format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .init(),
        // One JSON object per line, the request's fields at the top level.
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    match command {
        None | Some(Command::Serve) => {}
        Some(Command::Check { repair }) => {
            return chatfiles::check::main(&config, repair);
        }
        Some(Command::Healthcheck) => return chatfiles::routes::health::healthcheck(&config),
        Some(Command::User { action }) => return chatfiles::admin::main(&config, action),
    }
    let app = match Application::build(&config, Arc::new(SystemClock)) {
        Ok(app) => app,
        Err(err) => {
            eprintln!("error: {err:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    tracing::info!(
        address = %app.local_addr(),
        metrics = app.metrics_addr().map(tracing::field::display),
        storage = %config.storage_dir.display(),
        "chatfiles listening"
    );
    match app.run_until_stopped().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
