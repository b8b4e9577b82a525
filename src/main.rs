use std::process::ExitCode;
use std::sync::Arc;

use chatfiles::clock::SystemClock;
use chatfiles::config::{Cli, Invocation, LogFormat, Task, format_duration, format_size};
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

fn main() -> ExitCode {
    tune_allocator();
    serve_or_run()
}

/// Runs what the command line asks. Exit status: 0 when the service stopped cleanly (SIGINT or
/// SIGTERM) or the command's answer is yes; 1 when the command ran and the answer is no (damage
/// found, unhealthy, a user action refused) or the service failed while running; 2 when it could
/// not run at all (a flag or environment value, the secret, the storage directory or the
/// database refused).
#[actix_web::main]
async fn serve_or_run() -> ExitCode {
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let Invocation { task, config } = Cli::from_env_and_args();
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
    match task {
        Task::Serve => {}
        Task::Check { repair } => return chatfiles::check::main(&config, repair).await,
        Task::Migrate { to } => return chatfiles::migrate::main(&config, &to).await,
        Task::Healthcheck => return chatfiles::routes::health::healthcheck(&config),
        Task::User(action) => return chatfiles::admin::main(&config, action),
    }
    let app = match Application::build(&config, Arc::new(SystemClock)).await {
        Ok(app) => app,
        Err(err) => {
            // Nothing served yet: the secret, storage, database, object store or address was
            // refused.
            eprintln!("error: {err:#}");
            return ExitCode::from(2);
        }
    };
    let user_quota = match config.user_quota {
        0 => "none".to_owned(),
        bytes => format_size(bytes),
    };
    tracing::info!(
        max_file_size = %format_size(config.max_file_size),
        url_ttl = %format_duration(config.url_ttl),
        session_ttl = %format_duration(config.session_ttl),
        upload_expiry = %format_duration(config.upload_expiry),
        user_quota = %user_quota,
        memory_cache = %format_size(config.memory_cache),
        signup = %config.signup.as_str(),
        workers = config.worker_count(),
        "chatfiles limits"
    );
    tracing::info!(
        address = %app.local_addr(),
        metrics = app.metrics_addr().map(tracing::field::display),
        storage = %config.storage_dir.display(),
        objects = %app.store_description(),
        "chatfiles listening"
    );
    match app.run_until_stopped().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
