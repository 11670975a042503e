//! Server start-up, the same for every service: bind the API listener (port
//! 0 picks a free one, for tests) and, when configured, the ops listener
//! *before* anything else can fail, read the ports back, then serve the
//! service's app on both with the configured worker count.

use std::fmt;
use std::net::TcpListener;

use actix_http::{Request, Response};
use actix_service::{IntoServiceFactory, Service, ServiceFactory};
use actix_web::body::MessageBody;
use actix_web::dev::{AppConfig, Server};
use actix_web::{Error, HttpServer};

use crate::ops::{OpsPort, bind_ops_port};

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
    /// Bind `host:port`, and `host:ops_port` when it is set.
    pub fn bind(host: &str, port: u16, ops_port: Option<u16>) -> std::io::Result<Self> {
        let api = TcpListener::bind((host, port))
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
        let mut server = HttpServer::new(factory);
        if workers > 0 {
            server = server.workers(workers);
        }
        server = server.listen(self.api)?;
        if let Some(ops) = self.ops {
            server = server.listen(ops)?;
        }
        Ok(server.run())
    }
}
