//! Logging set-up shared by the binaries: `RUST_LOG` (an EnvFilter; `default` when unset)
//! and `RF_LOG_FORMAT` = `human` (default) or `json` (one JSON object per line, with the
//! current span's fields: partition, offsets, transaction).

pub fn init(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let json = std::env::var("RF_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    // Colours only on a terminal: a log file or a collector gets plain `field=value`.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    if json {
        builder.json().with_current_span(true).init();
    } else {
        builder.init();
    }
}
