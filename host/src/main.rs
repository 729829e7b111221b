use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use switchyard::config::{Cli, Command, Config};
use tracing_subscriber::EnvFilter;

// Every request, event and delivery allocates a few dozen short-lived buffers across two worker threads; glibc's
// malloc spent ~11 % of the router's CPU on them (BENCHMARKS.md, "Allocator and one-field payload reads").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("SWITCHYARD_LOG").unwrap_or_else(|_| EnvFilter::new("info")))
        // Colour only for a person at a terminal: a log going to a file, journald or a container runtime kept
        // every field wrapped in escape codes.
        .with_ansi(std::io::stdout().is_terminal())
        .init();
    match serve().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // The message names the setting or resource at fault; a backtrace would only bury it.
            eprintln!("switchyard: {}", describe(&error));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each said once. Most of this crate's errors quote their source in their own message
/// already, and anyhow's `{:#}` repeated it: a failed migration read "database: migration failed: X: migration
/// failed: X: X".
fn describe(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1).map(ToString::to_string) {
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

async fn serve() -> anyhow::Result<()> {
    let Command::Serve(args) = Cli::parse().command;
    let config = Config::load(args)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("configuration: `listen`: cannot listen on {}", config.listen))?;
    switchyard::run(config, listener, shutdown_signal()).await?;
    Ok(())
}

/// Resolves on ctrl-c or SIGTERM (what container runtimes and systemd send).
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_is_said_once() {
        let quoted = anyhow::anyhow!("disk full")
            .context("migration failed: disk full")
            .context("database: migration failed: disk full");
        assert_eq!(describe(&quoted), "database: migration failed: disk full");
        let bare = anyhow::Error::new(std::io::Error::other("address in use")).context("cannot listen on 127.0.0.1:80");
        assert_eq!(describe(&bare), "cannot listen on 127.0.0.1:80: address in use");
    }
}
