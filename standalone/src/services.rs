//! The three services on embedded backends, on a tokio runtime of their own in a
//! background thread: svc-users on `users.redb`, svc-tasks on `tasks.redb` with the
//! in-process cache, svc-notify on `notify.redb`, and the in-process bus from svc-tasks'
//! outbox relay to svc-notify's consumer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use svc_users::store::UserStore;
use todo_common::auth::TokenKeys;
use tokio_util::sync::CancellationToken;

/// How long the services get to drain and stop once the edge has stopped.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// The service configurations, each read from its own environment map.
pub struct ServiceConfigs {
    pub users: svc_users::Config,
    pub tasks: svc_tasks::Config,
    pub notify: svc_notify::Config,
}

pub struct Addresses {
    pub users: SocketAddr,
    pub tasks: SocketAddr,
    pub notify: SocketAddr,
    /// Demo users created at this start (0 when they existed already).
    pub seeded: usize,
}

pub struct Running {
    pub addresses: Addresses,
    stop: CancellationToken,
    stopped: mpsc::Receiver<()>,
    thread: JoinHandle<()>,
}

/// Builds, binds, seeds and starts the services; returns once they accept requests.
pub fn start(configs: ServiceConfigs, data_dir: &Path) -> anyhow::Result<Running> {
    let (ready_tx, ready_rx) = mpsc::channel::<anyhow::Result<Addresses>>();
    let (stopped_tx, stopped) = mpsc::channel();
    let stop = CancellationToken::new();
    let (token, data_dir) = (stop.clone(), data_dir.to_path_buf());
    let thread = std::thread::Builder::new().name("services".into()).spawn(move || {
        let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
            Ok(runtime) => runtime,
            Err(error) => {
                let _ = ready_tx.send(Err(anyhow::anyhow!("cannot start the services' runtime: {error}")));
                return;
            }
        };
        runtime.block_on(async move {
            match build(configs, &data_dir).await {
                Ok((apps, addresses)) => {
                    let _ = ready_tx.send(Ok(addresses));
                    apps.run(token).await;
                }
                Err(error) => {
                    let _ = ready_tx.send(Err(error));
                }
            }
        });
        let _ = stopped_tx.send(());
    })?;
    let addresses = ready_rx.recv().context("the services' thread ended before starting")??;
    Ok(Running { addresses, stop, stopped, thread })
}

impl Running {
    /// Stops the services (draining requests, the relay handing what it can to svc-notify)
    /// and waits for them a bounded time.
    pub fn stop(self) {
        self.stop.cancel();
        match self.stopped.recv_timeout(STOP_TIMEOUT) {
            Ok(()) => {
                let _ = self.thread.join();
            }
            Err(_) => tracing::warn!("the services did not stop in time"),
        }
    }
}

struct Apps {
    users: svc_users::Application,
    tasks: svc_tasks::Application,
    notify: svc_notify::Application,
}

impl Apps {
    async fn run(self, stop: CancellationToken) {
        let ((), (), notified) = tokio::join!(
            self.users.run_until_stopped(stop.clone()),
            self.tasks.run_until_stopped(stop.clone()),
            self.notify.run_until_stopped(stop),
        );
        if let Err(error) = notified {
            tracing::error!(error = format!("{error:#}"), "svc-notify stopped");
        }
    }
}

fn database(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join(name)
}

async fn build(configs: ServiceConfigs, data_dir: &Path) -> anyhow::Result<(Apps, Addresses)> {
    let open = |name: &str| {
        let path = database(data_dir, name);
        move |error: anyhow::Error| {
            error.context(format!("cannot open {} (is another instance running?)", path.display()))
        }
    };
    let bcrypt_cost = configs.users.bcrypt_cost;
    let user_backends = svc_users::Backends::embedded(&database(data_dir, "users.redb")).map_err(open("users.redb"))?;
    let user_store: Arc<dyn UserStore> = Arc::clone(&user_backends.store);
    let notify_store = svc_notify::store::EmbeddedNotificationStore::open(&database(data_dir, "notify.redb"))
        .map_err(open("notify.redb"))?;
    let (bus, receiver) = todo_common::bus::channel(todo_common::bus::DEFAULT_CAPACITY);
    let task_backends = svc_tasks::Backends::embedded(data_dir, bus).map_err(open("tasks.redb"))?;

    let users = svc_users::Application::build_with(configs.users, user_backends).await?;
    // The verifiers fetch svc-users' keys where it really listens (its port may be 0).
    let (mut tasks_config, mut notify_config) = (configs.tasks, configs.notify);
    for jwt in [&mut tasks_config.jwt, &mut notify_config.jwt] {
        if let TokenKeys::Jwks { url, .. } = &mut jwt.keys {
            *url = jwks_url(&users.local_addr().to_string());
        }
    }
    let tasks = svc_tasks::Application::build_with(tasks_config, task_backends).await?;
    let notify = svc_notify::Application::build_with(
        notify_config,
        Arc::new(notify_store),
        svc_notify::EventSource::Bus(receiver),
    )
    .await?;
    let seeded =
        svc_users::seed::seed_store(user_store.as_ref(), bcrypt_cost).await.context("seeding the demo users")?;
    let addresses =
        Addresses { users: users.local_addr(), tasks: tasks.local_addr(), notify: notify.local_addr(), seeded };
    Ok((Apps { users, tasks, notify }, addresses))
}

/// The token variables of the services: svc-users signs with the generated key, the
/// others verify with its JWK Set, served by svc-users at `users_addr`.
pub struct TokenEnv {
    pub signing_key: PathBuf,
    pub users_addr: String,
}

impl TokenEnv {
    pub fn issuer(&self) -> Vec<(&'static str, String)> {
        vec![("JWT_SIGNING_KEY", self.signing_key.display().to_string())]
    }

    pub fn verifier(&self) -> Vec<(&'static str, String)> {
        vec![("JWT_JWKS_URL", jwks_url(&self.users_addr))]
    }
}

fn jwks_url(users_addr: &str) -> String {
    format!("http://{users_addr}/.well-known/jwks.json")
}

/// The environment a service reads: the process's, with its own listen address and its
/// token variables (which replace any the process was given).
pub fn service_env(
    base: &HashMap<String, String>,
    listen_addr: &str,
    tokens: Vec<(&'static str, String)>,
) -> HashMap<String, String> {
    let mut env = base.clone();
    for key in ["JWT_SECRET", "JWT_PREVIOUS_KEYS", "JWT_SIGNING_KEY", "JWT_PREVIOUS_PUBLIC_KEYS", "JWT_JWKS_URL"] {
        env.remove(key);
    }
    env.insert("LISTEN_ADDR".into(), listen_addr.into());
    env.extend(tokens.into_iter().map(|(key, value)| (key.to_owned(), value)));
    env
}
