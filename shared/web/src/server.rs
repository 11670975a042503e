//! Server start-up, the same for every service: bind the API listener (port
//! 0 picks a free one, for tests) and, when configured, the ops listener
//! *before* anything else can fail, read the ports back, then serve the
//! service's app on both with the configured worker count.
//!
//! [`serve_shared`] serves several apps of one process (the hospitals of
//! `jyt up` and of the load test's city) on **one** server: one accept
//! thread and one set of workers sized for the cores, each listener
//! answered by its own app (its own state, keys and database), instead of
//! an accept loop and a worker pool per app.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::Arc;

use actix_http::{Request, Response};
use actix_service::{IntoServiceFactory, Service, ServiceFactory};
use actix_web::body::MessageBody;
use actix_web::dev::{AppConfig, Server};
use actix_web::{Error, HttpServer};
use jyt_settings::HttpSettings;

use crate::ops::{OpsPort, bind_ops_port};

/// How long a server waits for a request's head once it has accepted the
/// connection. actix-web's default is 5 s, and at a release second the
/// server itself can take that long to read a head the client sent at once:
/// its workers are busy with the surge. The request is then answered `408`
/// with an empty body. A test saw this in `booking_surge` under the full
/// suite, with 2,000 connections on a 2-core machine. Slow-client
/// protection belongs to the ingress in front of the services (Helm chart).
const REQUEST_HEAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A service's bound listeners and the ports they got.
#[derive(Debug)]
pub struct Listeners {
    api: TcpListener,
    ops: Option<TcpListener>,
    /// The API port actually bound.
    pub port: u16,
    /// The ops port actually bound, if `http.ops_port` is set; register it
    /// as app data for [`crate::ops::separate_ops_port`].
    pub ops_port: OpsPort,
}

impl Listeners {
    /// Bind the service's `http.host:port` with a queue of
    /// `http.listen_backlog` connections to accept, and `host:ops_port`
    /// when it is set.
    pub fn bind(http: &HttpSettings) -> std::io::Result<Self> {
        let (host, port, ops_port) = (http.host.as_str(), http.port, http.ops_port);
        let api = listen(host, port, http.listen_backlog)
            .map_err(|e| std::io::Error::new(e.kind(), format!("binding {host}:{port}: {e}")))?;
        let port = api.local_addr()?.port();
        let (ops, ops_port) = bind_ops_port(host, ops_port)
            .map_err(|e| std::io::Error::new(e.kind(), format!("binding the ops port {ops_port:?}: {e}")))?;
        Ok(Self {
            api,
            ops,
            port,
            ops_port,
        })
    }

    /// Serve `factory`'s app on every listener; `workers` 0 means one per core.
    pub fn serve<F, I, S, B>(self, workers: usize, factory: F) -> std::io::Result<Server>
    where
        F: Fn() -> I + Send + Clone + 'static,
        I: IntoServiceFactory<S, Request>,
        S: ServiceFactory<Request, Config = AppConfig> + 'static,
        S::Error: Into<Error> + 'static,
        S::InitError: fmt::Debug,
        S::Response: Into<Response<B>> + 'static,
        <S::Service as Service<Request>>::Future: 'static,
        S::Service: 'static,
        B: MessageBody + 'static,
    {
        let mut server = HttpServer::new(factory).client_request_timeout(REQUEST_HEAD_TIMEOUT);
        if workers > 0 {
            server = server.workers(workers);
        }
        server = server.listen(self.api)?;
        if let Some(ops) = self.ops {
            server = server.listen(ops)?;
        }
        Ok(server.run())
    }

    /// Every port bound (the API's, and the ops port's when set).
    fn ports(&self) -> impl Iterator<Item = u16> {
        std::iter::once(self.port).chain(self.ops_port.0)
    }
}

/// A listener on `host:port` (the first of its addresses that binds, as
/// `TcpListener::bind` tries them) whose kernel queue holds `backlog`
/// connections not yet accepted. The standard library listens with 128,
/// and actix-web's own default (1,024) applies only to the addresses it
/// binds itself, not to a listener handed to it.
fn listen(host: &str, port: u16, backlog: u32) -> std::io::Result<TcpListener> {
    let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
    let mut last = None;
    for addr in (host, port).to_socket_addrs()? {
        match listen_on(addr, backlog) {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(last
        .unwrap_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "the host has no address")))
}

fn listen_on(addr: SocketAddr, backlog: i32) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // As `TcpListener::bind` does on Unix: a restarted service binds its
    // port again while the old connections are in TIME_WAIT.
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

/// Serve several apps on one server: `make(key)` builds the app of the
/// listeners bound with `key`; a worker builds each listener's app once,
/// knowing the listener by its local port. `workers` 0 means one per core.
pub fn serve_shared<K, F, I, S, B>(
    workers: usize,
    apps: Vec<(Listeners, K)>,
    make: F,
) -> std::io::Result<Server>
where
    K: Send + Sync + 'static,
    F: Fn(&K) -> I + Send + Sync + Clone + 'static,
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<Request, Config = AppConfig> + 'static,
    S::Error: Into<Error> + 'static,
    S::InitError: fmt::Debug + Default,
    S::Response: Into<Response<B>> + 'static,
    <S::Service as Service<Request>>::Future: 'static,
    S::Service: 'static,
    B: MessageBody + 'static,
{
    let mut keys = Vec::with_capacity(apps.len());
    let mut by_port = HashMap::new();
    let mut sockets = Vec::new();
    for (i, (listeners, key)) in apps.into_iter().enumerate() {
        by_port.extend(listeners.ports().map(|p| (p, i)));
        sockets.push(listeners.api);
        sockets.extend(listeners.ops);
        keys.push(key);
    }
    let (keys, by_port) = (Arc::new(keys), Arc::new(by_port));
    let mut server = HttpServer::new(move || ByLocalPort {
        keys: keys.clone(),
        by_port: by_port.clone(),
        make: make.clone(),
        _factory: PhantomData,
    })
    .client_request_timeout(REQUEST_HEAD_TIMEOUT);
    if workers > 0 {
        server = server.workers(workers);
    }
    for socket in sockets {
        server = server.listen(socket)?;
    }
    Ok(server.run())
}

/// The app factory of a shared server: builds, for the listener it is
/// started on (`AppConfig::local_addr`), the app of that listener's key.
struct ByLocalPort<K, F, S> {
    keys: Arc<Vec<K>>,
    by_port: Arc<HashMap<u16, usize>>,
    make: F,
    _factory: PhantomData<fn() -> S>,
}

impl<K, F, I, S> ServiceFactory<Request> for ByLocalPort<K, F, S>
where
    F: Fn(&K) -> I,
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<Request, Config = AppConfig>,
    S::InitError: Default,
    S::Future: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Config = AppConfig;
    type Service = S::Service;
    type InitError = S::InitError;
    type Future =
        futures::future::Either<S::Future, futures::future::Ready<Result<S::Service, S::InitError>>>;

    fn new_service(&self, config: AppConfig) -> Self::Future {
        let key = self
            .by_port
            .get(&config.local_addr().port())
            .and_then(|i| self.keys.get(*i));
        match key {
            Some(key) => futures::future::Either::Left((self.make)(key).into_factory().new_service(config)),
            // Every listener of the server was registered with its key.
            None => {
                tracing::error!(addr = %config.local_addr(), "no app for this listener");
                futures::future::Either::Right(futures::future::ready(Err(S::InitError::default())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpStream;
    use std::time::Duration;

    use super::listen;

    /// Connections the listener queues before anything accepts them: more
    /// than the standard library's 128, so a listener bound with its
    /// default drops the SYNs after the 129th and this fails.
    const BURST: usize = 400;

    #[test]
    fn a_burst_of_connections_waits_in_the_queue_the_backlog_asks_for() {
        let listener = listen("127.0.0.1", 0, 1024).expect("a listener on a free port");
        let addr = listener.local_addr().expect("its address");
        // Nothing accepts: every connection must find room in the queue. A
        // dropped SYN would be retried after a second, past the timeout.
        let connected: Vec<TcpStream> = (0..BURST)
            .map(|i| {
                TcpStream::connect_timeout(&addr, Duration::from_millis(500))
                    .unwrap_or_else(|e| panic!("connection {i} of {BURST} was not queued: {e}"))
            })
            .collect();
        assert_eq!(connected.len(), BURST);
    }

    #[test]
    fn an_address_this_machine_does_not_have_is_an_error_not_a_listener() {
        // TEST-NET-1 (RFC 5737): a literal, so no name is looked up, and
        // never an address of this machine, so binding it fails.
        let refused = listen("192.0.2.1", 0, 16).expect_err("no listener on another machine's address");
        assert_eq!(refused.kind(), std::io::ErrorKind::AddrNotAvailable);
    }
}
