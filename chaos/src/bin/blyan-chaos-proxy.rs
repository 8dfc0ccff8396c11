//! `blyan-chaos-proxy`: a Toxiproxy-compatible fault proxy. Serves the Toxiproxy HTTP API
//! (`GET/POST /proxies`, `POST /populate`, toxics, `POST /reset`, `GET /version`) so that any
//! Toxiproxy client can create proxies and add latency, bandwidth, timeout, slicer, limit_data,
//! slow_close and reset_peer toxics, or cut a link with `enabled = false`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "blyan-chaos-proxy",
    version,
    about = "A Toxiproxy-compatible TCP fault proxy (API on port 8474), built on noxious",
    long_about = "A Toxiproxy-compatible TCP fault proxy. It serves the Toxiproxy HTTP API with \
the same paths, JSON and status codes, so existing Toxiproxy clients work unchanged. The Blyan \
harness starts one per chaos devnet and routes every directed P2P link through its own proxy."
)]
struct Args {
    /// Address the API listens on.
    #[arg(long, default_value = "0.0.0.0", env = "BLYAN_CHAOS_HOST")]
    host: String,
    /// Port the API listens on (Toxiproxy's default).
    #[arg(long, default_value_t = 8474, env = "BLYAN_CHAOS_PORT")]
    port: u16,
    /// A JSON file with a list of proxies to create at start (as `POST /populate` takes).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Log filter (tracing's env-filter syntax).
    #[arg(long, default_value = "info", env = "BLYAN_CHAOS_LOG")]
    log: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log))
        .with_writer(std::io::stderr)
        .init();
    let store = blyan_chaos::Store::default();
    if let Some(path) = &args.config {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--config {}: cannot read", path.display()))?;
        let list: Vec<blyan_chaos::server::NewProxy> = serde_json::from_str(&text)
            .with_context(|| format!("--config {}: not a JSON list of proxies", path.display()))?;
        let made = store
            .populate(list)
            .await
            .map_err(|error| anyhow::anyhow!("--config {}: {}", path.display(), error.message))?;
        tracing::info!(proxies = made.len(), "populated from {}", path.display());
    }
    let address = format!("{}:{}", args.host, args.port);
    let listener = tokio::net::TcpListener::bind(&address)
        .await
        .with_context(|| format!("cannot listen on {address}"))?;
    tracing::info!("Toxiproxy API on http://{}", listener.local_addr()?);
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a SIGTERM handler installs");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    blyan_chaos::serve(listener, store, shutdown).await?;
    Ok(())
}
