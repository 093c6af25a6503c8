//! The binary's log output: the tracing subscriber, its level changeable
//! live through the admin API.

/// Installs the subscriber that writes the log to stderr, at `log_level`
/// until `PUT /log-level` changes it.
pub(crate) fn install(log_level: tracing::Level) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    // h2 warns once per hostile HTTP/2 connection (rapid reset, stray
    // PING acks): a flood of them would flood the log. The gateway logs
    // those closes itself, rate-limited; h2's errors still show.
    let quiet_h2 = tracing_subscriber::filter::Targets::new()
        .with_target("h2", tracing_subscriber::filter::LevelFilter::ERROR)
        .with_default(tracing_subscriber::filter::LevelFilter::TRACE);
    // The level can change live: `PUT /log-level` on the admin API.
    let (level, handle) = tracing_subscriber::reload::Layer::new(
        tracing_subscriber::filter::LevelFilter::from_level(log_level),
    );
    tracing_subscriber::registry()
        .with(level)
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_writer(std::io::stderr),
        )
        .with(quiet_h2)
        .init();
    rpcgate::admin::set_log_level_control(Box::new(move |wanted| {
        if let Some(wanted) = wanted {
            let level: tracing_subscriber::filter::LevelFilter = wanted.parse().map_err(|_| {
                format!("`{wanted}` is not a log level (error, warn, info, debug, trace, off)")
            })?;
            handle.reload(level).map_err(|e| e.to_string())?;
            tracing::warn!(%level, "log level changed through the admin API");
        }
        handle
            .clone_current()
            .map(|level| level.to_string().to_ascii_lowercase())
            .ok_or_else(|| "the log level is not available".to_owned())
    }));
}
