use std::sync::Arc;

use chatfiles::clock::SystemClock;
use chatfiles::config::{Cli, Command};
use chatfiles::startup::Application;
use tracing_subscriber::EnvFilter;

#[actix_web::main]
async fn main() -> std::process::ExitCode {
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let Cli { command, config } = Cli::from_env_and_args();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    match command {
        None | Some(Command::Serve) => {}
        Some(Command::Check { repair }) => {
            return chatfiles::check::main(&config, repair);
        }
    }
    let app = match Application::build(&config, Arc::new(SystemClock)) {
        Ok(app) => app,
        Err(err) => {
            eprintln!("error: {err:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    tracing::info!(address = %app.local_addr(), storage = %config.storage_dir.display(), "chatfiles listening");
    match app.run_until_stopped().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
