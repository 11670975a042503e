//! Start every service of the demo city in this process, on fixed ports.

use std::collections::HashMap;

use anyhow::Context;
use chrono::Days;
use jyt_domain::SlotRef;
use jyt_settings::Sources;
use tokio::task::JoinHandle;

use crate::infra::Endpoints;
use crate::settings::{CitySettings, DemoCredentials};

/// One running service, for the summary.
pub struct Running {
    pub name: String,
    pub url: String,
}

/// A server task to wait for on the way out.
pub struct Task {
    pub name: String,
    pub task: JoinHandle<std::io::Result<()>>,
}

/// The city as started: what to print, what to wait for.
pub struct Started {
    pub running: Vec<Running>,
    pub tasks: Vec<Task>,
    /// A slot to book in the first hospital, for the printed example.
    pub example_slot: Option<SlotRef>,
}

/// The process environment plus our overrides (ours win: they are what
/// makes the city hang together).
fn sources(overrides: Vec<(String, String)>) -> Sources {
    let mut env: HashMap<String, String> = std::env::vars().collect();
    env.extend(overrides);
    Sources {
        config_dir: None,
        environment_name: None,
        env: Some(env),
    }
}

fn common(
    prefix: &str,
    port: u16,
    database_url: Option<&str>,
    e: &Endpoints,
    key_prefix: &str,
) -> Vec<(String, String)> {
    let mut v = vec![
        (format!("{prefix}HTTP__HOST"), "127.0.0.1".to_owned()),
        (format!("{prefix}HTTP__PORT"), port.to_string()),
        (format!("{prefix}HTTP__WORKERS"), "2".to_owned()),
        (format!("{prefix}REDIS__URLS"), e.redis_url.clone()),
        (format!("{prefix}REDIS__KEY_PREFIX"), key_prefix.to_owned()),
        (format!("{prefix}TELEMETRY__LOG_FORMAT"), "pretty".to_owned()),
    ];
    if let Some(url) = database_url {
        v.push((format!("{prefix}POSTGRES__URL"), url.to_owned()));
    }
    v
}

/// Start the city: every hospital on one shared server (one accept thread,
/// a worker per core, each hospital's port answered by its own app), then
/// the gateway, card-issuing and channel-accounting.
pub async fn start(settings: &CitySettings, e: &Endpoints) -> anyhow::Result<Started> {
    let key_prefix = &settings.redis.key_prefix;
    let credentials = DemoCredentials::load()?;
    let mut running = Vec::new();
    let mut tasks = Vec::new();
    let mut example_slot = None;
    let mut routes = Vec::new();
    let mut hospitals = Vec::new();

    for (i, hospital) in settings.hospitals.iter().enumerate() {
        let database = format!("jyt_slot_{}", hospital.id);
        jyt_db::ensure_database(&e.postgres_admin_url, &database).await?;
        let url = jyt_db::url_with_database(&e.postgres_admin_url, &database);
        let port = settings.slot_inventory_port(i);
        let p = "JYT_SLOT_INVENTORY__";
        let mut env = common(p, port, Some(&url), e, key_prefix);
        env.push((format!("{p}HOSPITAL__ID"), hospital.id.to_string()));
        env.push((format!("{p}HOSPITAL__NAME"), hospital.name.clone()));
        let s = slot_inventory::Settings::load_from(&sources(env))?;
        let app = slot_inventory::Hospital::build(s)
            .await
            .with_context(|| format!("starting slot-inventory for {}", hospital.id))?;
        for day in 1..=u64::from(settings.demo.days) {
            let date = jyt_domain::time::today()
                .checked_add_days(Days::new(day))
                .context("date out of range")?;
            let stored =
                slot_inventory::seed::seed_demo_day(app.state(), date, settings.demo.seats_per_segment)
                    .await?;
            if example_slot.is_none() && day == 1 {
                example_slot = stored
                    .first()
                    .and_then(|s| s.segment_ids.first())
                    .map(|seg| SlotRef::new(hospital.id.clone(), *seg));
            }
        }
        // The seed ran after start: load its segments now so the first
        // booking finds them in Redis.
        slot_inventory::booking::cache::warm_cache(app.state()).await?;
        let base_url = format!("http://127.0.0.1:{port}");
        routes.push((hospital, base_url.clone()));
        running.push(Running {
            name: format!("slot-inventory {}", hospital.id),
            url: base_url,
        });
        hospitals.push(app);
    }
    // One server for every hospital, sized for the cores (issue 20: 29
    // hospitals were 29 accept loops, each with its own workers).
    let served = slot_inventory::serve_together(0, hospitals)?;
    tasks.push(Task {
        name: "slot-inventory (every hospital)".into(),
        task: tokio::spawn(served.run_until_stopped()),
    });

    let p = "JYT_GATEWAY__";
    let mut env = common(p, settings.ports.gateway, None, e, key_prefix);
    env.push((
        format!("{p}CARD_ISSUING__BASE_URL"),
        format!("http://127.0.0.1:{}", settings.ports.card_issuing),
    ));
    // Patients' apps answer post-visit surveys through the gateway, which
    // relays them to channel-accounting's survey door (started below).
    env.push((
        format!("{p}CHANNEL_ACCOUNTING__BASE_URL"),
        format!("http://127.0.0.1:{}", settings.ports.channel_accounting),
    ));
    for (app, secret) in &credentials.channel_app_secrets {
        let a = format!("{p}CHANNEL_APPS__{}__", app.to_ascii_uppercase());
        env.push((format!("{a}CHANNEL"), app.clone()));
        env.push((format!("{a}SECRET"), secret.clone()));
    }
    // The demo operator's token also opens the dead-letter endpoints.
    env.push((
        format!("{p}NOTIFICATIONS__OPERATOR_TOKEN_SHA256"),
        credentials.operator.token_sha256.clone(),
    ));
    // The SMART bulk manifest lists its files by absolute URL: the demo's.
    env.push((
        format!("{p}FHIR__PUBLIC_BASE_URL"),
        format!("http://127.0.0.1:{}", settings.ports.gateway),
    ));
    for (hospital, base_url) in &routes {
        let h = format!("{p}HOSPITALS__{}__", hospital.id.as_str().to_ascii_uppercase());
        env.push((format!("{h}NAME"), hospital.name.clone()));
        env.push((format!("{h}BASE_URL"), base_url.clone()));
        env.push((format!("{h}DISTRICT"), hospital.district.clone()));
        env.push((format!("{h}LEVEL"), hospital.level.clone()));
    }
    let gateway_settings = gateway::Settings::load_from(&sources(env))?;
    // The console reaches hospitals through the gateway's operators' relay
    // with the gateway-ops key, derived from the gateway's master secret.
    let master =
        secrecy::ExposeSecret::expose_secret(&gateway_settings.internal_auth.master_secret).to_owned();
    let ops_key = jyt_signing::internal::derive_key(master.as_bytes(), jyt_signing::internal::GATEWAY_OPS);
    let gateway = gateway::Application::build(gateway_settings).await?;
    let gateway_url = format!("http://127.0.0.1:{}", gateway.port());
    print_signing_help(&format!("http://127.0.0.1:{}", gateway.port()), &credentials);
    running.push(Running {
        name: "gateway".into(),
        url: format!("http://127.0.0.1:{}", gateway.port()),
    });
    tasks.push(Task {
        name: "gateway".into(),
        task: tokio::spawn(gateway.run_until_stopped()),
    });

    jyt_db::ensure_database(&e.postgres_admin_url, "jyt_card").await?;
    let url = jyt_db::url_with_database(&e.postgres_admin_url, "jyt_card");
    let p = "JYT_CARD_ISSUING__";
    let mut env = common(p, settings.ports.card_issuing, Some(&url), e, key_prefix);
    // The defaults have no operator: the demo's is configured here only.
    env.push((
        format!(
            "{p}OPERATORS__{}__TOKEN_SHA256",
            credentials.operator.id.to_ascii_uppercase()
        ),
        credentials.operator.token_sha256.clone(),
    ));
    let cards = card_issuing::Application::build(card_issuing::Settings::load_from(&sources(env))?).await?;
    running.push(Running {
        name: "card-issuing".into(),
        url: format!("http://127.0.0.1:{}", cards.port()),
    });
    tasks.push(Task {
        name: "card-issuing".into(),
        task: tokio::spawn(cards.run_until_stopped()),
    });

    jyt_db::ensure_database(&e.postgres_admin_url, "jyt_accounting").await?;
    let url = jyt_db::url_with_database(&e.postgres_admin_url, "jyt_accounting");
    let p = "JYT_CHANNEL_ACCOUNTING__";
    let mut env = common(p, settings.ports.channel_accounting, Some(&url), e, key_prefix);
    // The console's demo login (credentials.console), on this machine only.
    env.push((format!("{p}OPERATORS__DEMO_ACCOUNT"), "true".to_owned()));
    env.push((format!("{p}GATEWAY__URL"), gateway_url));
    env.push((format!("{p}GATEWAY__OPS_KEY"), ops_key));
    // The survey door takes the gateway's tokens: on this machine it
    // derives its key from the demo master, as card-issuing does.
    env.push((format!("{p}INTERNAL_AUTH__MASTER_SECRET"), master));
    let accounting =
        channel_accounting::Application::build(channel_accounting::Settings::load_from(&sources(env))?)
            .await?;
    running.push(Running {
        name: "channel-accounting".into(),
        url: format!("http://127.0.0.1:{}", accounting.port()),
    });
    tasks.push(Task {
        name: "channel-accounting".into(),
        task: tokio::spawn(accounting.run_until_stopped()),
    });

    Ok(Started {
        running,
        tasks,
        example_slot,
    })
}

/// How to sign a request to the demo gateway from a shell, and the demo
/// operators' credentials.
pub fn signing_help(gateway: &str, credentials: &DemoCredentials) -> String {
    let apps = &credentials.channel_app_secrets;
    let app = if apps.contains_key("wechat") {
        "wechat"
    } else {
        apps.keys().next().map_or("wechat", String::as_str)
    };
    let secret = apps.get(app).map_or("", String::as_str);
    let names: Vec<&str> = apps.keys().map(String::as_str).collect();
    let (op, console) = (&credentials.operator, &credentials.console);
    format!(
        "Every /v1 request is signed (see README, \"Signed requests\"). Demo apps: {}; their\n\
         secrets are in jyt/config/demo-credentials.toml. From a shell:\n\
         \n  APP={app} SECRET={secret}\n\
         \x20 TS=$(date +%s) NONCE=$(cat /proc/sys/kernel/random/uuid | tr -d -) BODY=''\n\
         \x20 SIG=$(printf 'GET\\n/v1/hospitals\\n%s\\n%s\\n%s' \"$TS\" \"$NONCE\" \"$(printf %s \"$BODY\" | sha256sum | cut -d' ' -f1)\" \\\n\
         \x20   | openssl dgst -sha256 -hmac \"$SECRET\" -hex | sed 's/^.* //')\n\
         \x20 curl -s {gateway}/v1/hospitals -H \"X-App-Id: $APP\" -H \"X-Timestamp: $TS\" -H \"X-Nonce: $NONCE\" -H \"X-Signature: $SIG\"\n\
         \nBookings name the patient by card: register through the gateway (POST /v1/patients\n\
         {{\"name\", \"id_number\", \"phone\"}}, then POST /v1/patients/<id>/ecard with an\n\
         Idempotency-Key), signed the same way, as scripts/demo-book.sh does. Then send\n\
         {{\"slot_id\": ..., \"card_number\": ...}} to the gateway, signed the same way.\n\
         \nDemo operators (refused by every service outside JYT_ENV=local, test and demo):\n\
         \x20 card-issuing operator `{}` and the gateway's /ops/notifications/dead-letters:\n\
         \x20   Authorization: Bearer {}\n\
         \x20 channel-accounting console /console: {} / {}",
        names.join(", "),
        op.id,
        op.token,
        console.login,
        console.password,
    )
}

#[expect(clippy::print_stdout, reason = "the demo city tells its user how to call it")]
fn print_signing_help(gateway: &str, credentials: &DemoCredentials) {
    println!("{}", signing_help(gateway, credentials));
}
