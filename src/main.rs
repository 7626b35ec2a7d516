//! The `switchyard` command: the relay (`serve`) and its admin CLI.
//!
//! CLI commands drive the admin API's own handlers: in process when no relay holds the data
//! dir, else over HTTP against the relay that does (its address is in `<data dir>/serve.addr`).
#![allow(clippy::print_stdout)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

use switchyard::app::App;
use switchyard::config::{Config, Flags};
use switchyard::server::{self, Server};
use switchyard::store::StoreError;

/// Where a running relay writes its address, for the CLI.
const ADDR_FILE: &str = "serve.addr";

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "A relay for LLM and image-generation APIs"
)]
struct Cli {
    /// TOML configuration file (every option is documented in config.example.toml).
    #[arg(long, global = true, env = "SWITCHYARD_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (embedded store, generated secrets).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per run, as `AccountsCommand`.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the relay.
    Serve {
        /// Address to listen on, such as 127.0.0.1:8080.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Client API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Upstream accounts.
    #[command(subcommand)]
    Accounts(AccountsCommand),
    /// Usage totals, optionally for one key, account or model, with a series.
    Usage(UsageArgs),
    /// Model prices.
    #[command(subcommand)]
    Pricing(PricingCommand),
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key; its secret is printed once.
    Create {
        #[arg(long)]
        name: String,
        /// Limits as JSON, e.g. '{"max_concurrency": 4, "daily_cost_nanousd": 5000000000}'.
        #[arg(long)]
        limits: Option<String>,
    },
    List,
    /// A key with its limits, their current use and its expiry.
    Show {
        id: String,
    },
    /// Change a key's limits with a JSON merge patch: given fields replace, `null` removes,
    /// e.g. '{"window": {"seconds": 3600, "requests": 100}, "max_concurrency": null}'.
    Limits {
        id: String,
        patch: String,
    },
    Enable {
        id: String,
    },
    Disable {
        id: String,
    },
    Delete {
        id: String,
    },
    /// A new secret for the key (printed once); the old one is refused from now on. Its id,
    /// limits, binding and usage stay.
    Rotate {
        id: String,
    },
}

// Parsed once per run: the size of the `Add` variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum AccountsCommand {
    /// Add an upstream account.
    Add {
        #[arg(long)]
        name: String,
        /// anthropic, openai (or any OpenAI-compatible vendor), azure-openai, gemini, bedrock,
        /// chatgpt (a ChatGPT subscription, through the Codex backend), code-assist (a Google
        /// login, through the Code Assist API). Default: anthropic, chatgpt with --codex-auth,
        /// code-assist with --gemini-auth.
        #[arg(long)]
        provider: Option<String>,
        /// The account's API key, or a subscription's access token (or set
        /// SWITCHYARD_ACCOUNT_API_KEY to keep it out of the shell history).
        #[arg(
            long,
            env = "SWITCHYARD_ACCOUNT_API_KEY",
            hide_env_values = true,
            required_unless_present_any = ["codex_auth", "gemini_auth"]
        )]
        api_key: Option<String>,
        /// A subscription's OAuth refresh token, which renews the access token; with
        /// --token-url and --client-id.
        #[arg(long, requires_all = ["token_url", "client_id"])]
        refresh_token: Option<String>,
        /// The token endpoint of the subscription's OAuth login.
        #[arg(long, requires = "refresh_token")]
        token_url: Option<String>,
        /// The OAuth client the tokens were issued to (the CLI that logged in).
        #[arg(long)]
        client_id: Option<String>,
        /// The OAuth client's secret, for token endpoints that want one (Google's; or set
        /// SWITCHYARD_OAUTH_CLIENT_SECRET, read only for a code-assist account given a grant).
        #[arg(long)]
        client_secret: Option<String>,
        /// When the access token expires (RFC 3339); read from it when it is a JWT.
        #[arg(long, requires = "refresh_token")]
        expires_at: Option<String>,
        /// A ChatGPT subscription from Codex CLI's login file (~/.codex/auth.json): its access
        /// token, refresh token and OAuth client (a chatgpt account). It wins over --api-key and
        /// SWITCHYARD_ACCOUNT_API_KEY.
        #[arg(long, conflicts_with_all = ["refresh_token", "gemini_auth"])]
        codex_auth: Option<std::path::PathBuf>,
        /// A Google login from Gemini CLI's login file (~/.gemini/oauth_creds.json): its access
        /// token, refresh token, expiry and OAuth client (a code-assist account); with
        /// --client-secret, the secret of the OAuth client that logged in. It wins over
        /// --api-key and SWITCHYARD_ACCOUNT_API_KEY.
        #[arg(long, conflicts_with = "refresh_token")]
        gemini_auth: Option<std::path::PathBuf>,
        /// Code Assist: the Google Cloud project calls are made for (unset: the one the API
        /// gives the login).
        #[arg(long)]
        project: Option<String>,
        /// The account's own proxy, which every call made for it goes through:
        /// http(s)://[user:password@]host[:port] or socks5(h)://… (or set
        /// SWITCHYARD_ACCOUNT_PROXY to keep its credentials out of the shell history).
        #[arg(long, env = "SWITCHYARD_ACCOUNT_PROXY", hide_env_values = true)]
        proxy: Option<String>,
        #[arg(long)]
        base_url: Option<String>,
        /// Lower is preferred.
        #[arg(long)]
        priority: Option<i32>,
        /// A model glob this account serves (repeatable; none = all models).
        #[arg(long = "model")]
        models: Vec<String>,
        #[arg(long)]
        max_concurrency: Option<u32>,
        /// What the account may cost per day, in nano-dollars (reached, it rests until midnight
        /// in `[limits] timezone`).
        #[arg(long)]
        daily_cost_nanousd: Option<u64>,
        /// What the account may cost per calendar month, in nano-dollars.
        #[arg(long)]
        monthly_cost_nanousd: Option<u64>,
        /// Add it out of rotation.
        #[arg(long)]
        unschedulable: bool,
        /// Azure OpenAI: the api-version.
        #[arg(long)]
        api_version: Option<String>,
        /// Azure OpenAI: MODEL=DEPLOYMENT; Bedrock: MODEL=MODEL_ID or inference profile
        /// (repeatable).
        #[arg(long = "deployment")]
        deployments: Vec<String>,
        /// Anthropic, OpenAI, Gemini, ChatGPT: MODEL=NAME, the vendor's name for a model (or
        /// glob) clients ask for (repeatable).
        #[arg(long = "model-map")]
        model_map: Vec<String>,
        /// Bedrock: the AWS region.
        #[arg(long)]
        region: Option<String>,
        /// Bedrock: sign requests with this access key id, the api key being its secret access
        /// key (without it, the api key is a Bedrock API key).
        #[arg(long)]
        aws_access_key_id: Option<String>,
    },
    List,
    Remove {
        id: String,
    },
    /// Send the account one short request and show what came back (nothing else changes).
    Test {
        id: String,
        /// The model to ask (default: the account's first, or a small one of its provider's).
        #[arg(long)]
        model: Option<String>,
    },
}

#[derive(Args)]
struct UsageArgs {
    #[arg(long, conflicts_with_all = ["account_id", "model"])]
    key_id: Option<String>,
    #[arg(long, conflicts_with = "model")]
    account_id: Option<String>,
    #[arg(long)]
    model: Option<String>,
    /// RFC 3339 time or YYYY-MM-DD.
    #[arg(long)]
    from: Option<String>,
    #[arg(long)]
    to: Option<String>,
    /// hour, day or month.
    #[arg(long)]
    granularity: Option<String>,
}

#[derive(Subcommand)]
enum PricingCommand {
    /// Import a LiteLLM model_prices_and_context_window.json; it overrides the built-in prices.
    Import { file: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    switchyard::app::install_crypto_provider();
    let flags = Flags {
        listen: match &cli.command {
            Command::Serve { listen } => *listen,
            _ => None,
        },
        data_dir: cli.data_dir.clone(),
    };
    let config = match Config::load(cli.config.as_deref(), std::env::vars(), &flags) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("switchyard: {e}");
            return ExitCode::from(2);
        }
    };
    let log = switchyard::logging::init(&config, matches!(cli.command, Command::Serve { .. }));
    // Worker 0 of the server (src/server.rs); the other workers start their own.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchyard: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve { .. } => serve(config).await,
            command => run_cli(config, command).await,
        }
    });
    // The last log lines go out before anything printed below.
    drop(runtime);
    drop(log);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyard: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let data_dir = config.data_dir.clone();
    let app = App::open(config).await.map_err(|e| {
        if matches!(e.downcast_ref::<StoreError>(), Some(StoreError::Locked)) {
            anyhow::anyhow!(
                "{} is in use by another switchyard process",
                data_dir.display()
            )
        } else {
            e
        }
    })?;
    if let Some(path) = &app.admin_token_file {
        tracing::info!(path = %path.display(), "admin token is in this file");
    }
    let server = Server::bind(Arc::clone(&app))
        .await
        .with_context(|| format!("cannot listen on {}", app.config.listen))?;
    let addr = server.local_addr()?;
    // Before the address is written: whoever reads it may signal at once.
    let (stop, cut) = server::stop_signals();
    let addr_file = data_dir.join(ADDR_FILE);
    std::fs::write(&addr_file, addr.to_string())
        .with_context(|| format!("cannot write {}", addr_file.display()))?;
    tracing::info!(%addr, version = env!("CARGO_PKG_VERSION"), store = %app.config.store_for_display(), "switchyard listening");
    server.run(stop, cut).await;
    let _ = std::fs::remove_file(&addr_file);
    Ok(())
}

/// Calls the admin API in process, or over HTTP when a running relay holds the data dir.
enum Admin {
    Local(Arc<App>),
    Remote {
        base: String,
        token: String,
        client: reqwest::Client,
    },
}

impl Admin {
    async fn connect(config: Config) -> anyhow::Result<Admin> {
        let data_dir = config.data_dir.clone();
        let configured_token = config.admin_token.clone();
        match App::open(config).await {
            Ok(app) => Ok(Admin::Local(app)),
            Err(e) if matches!(e.downcast_ref::<StoreError>(), Some(StoreError::Locked)) => {
                let addr =
                    std::fs::read_to_string(data_dir.join(ADDR_FILE)).with_context(|| {
                        format!(
                            "{} is in use, but the relay's address is unknown",
                            data_dir.display()
                        )
                    })?;
                let token = match configured_token {
                    Some(t) => t,
                    None => read_token(&data_dir.join("admin-token"))?,
                };
                let addr: SocketAddr = addr
                    .trim()
                    .parse()
                    .context("serve.addr is not an address")?;
                let host = if addr.ip().is_unspecified() {
                    SocketAddr::new([127, 0, 0, 1].into(), addr.port())
                } else {
                    addr
                };
                Ok(Admin::Remote {
                    base: format!("http://{host}"),
                    token,
                    client: admin_client(host)?,
                })
            }
            Err(e) => Err(e),
        }
    }

    async fn call(
        &self,
        method: http::Method,
        path: &str,
        body: Option<Bytes>,
    ) -> anyhow::Result<Value> {
        let (status, bytes) = match self {
            Admin::Local(app) => {
                let req = http::Request::builder()
                    .method(method)
                    .uri(path)
                    .header(
                        http::header::AUTHORIZATION,
                        format!("Bearer {}", app.admin_token),
                    )
                    .body(Full::new(body.unwrap_or_default()))?;
                let resp = switchyard::router::handle(Arc::clone(app), req, None).await;
                let status = resp.status();
                let bytes = resp
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?
                    .to_bytes();
                (status, bytes)
            }
            Admin::Remote {
                base,
                token,
                client,
            } => {
                let mut req = client
                    .request(method, format!("{base}{path}"))
                    .bearer_auth(token);
                if let Some(body) = body {
                    req = req
                        .header(http::header::CONTENT_TYPE, "application/json")
                        .body(body);
                }
                let resp = req
                    .send()
                    .await
                    .context("the running relay did not answer")?;
                (resp.status(), resp.bytes().await?)
            }
        };
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !status.is_success() {
            let message = value["error"]["message"]
                .as_str()
                .unwrap_or("request failed");
            bail!("{message} ({status})");
        }
        Ok(value)
    }

    async fn close(self) {
        if let Admin::Local(app) = self {
            app.shutdown(tokio::time::Instant::now() + server::STOP_TAIL)
                .await;
        }
    }
}

/// The client for a running relay's admin API. One on this host is called directly: through an
/// HTTP proxy of the environment (`HTTP_PROXY`, `ALL_PROXY`), the admin token would go to the
/// proxy, which cannot reach our loopback anyway. A remote relay is reached as the environment says.
fn admin_client(relay: SocketAddr) -> reqwest::Result<reqwest::Client> {
    let builder = reqwest::Client::builder();
    if relay.ip().to_canonical().is_loopback() {
        builder.no_proxy().build()
    } else {
        builder.build()
    }
}

fn read_token(path: &Path) -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the admin token from {}", path.display()))?
        .trim()
        .to_owned())
}

async fn run_cli(config: Config, command: Command) -> anyhow::Result<()> {
    use http::Method;
    let admin = Admin::connect(config).await?;
    let json_body = |v: Value| Some(Bytes::from(v.to_string()));
    let result = match command {
        Command::Serve { .. } => Ok(Value::Null),
        Command::Keys(cmd) => match cmd {
            KeysCommand::Create { name, limits } => {
                let limits = match limits.as_deref().map(serde_json::from_str::<Value>) {
                    None => Value::Null,
                    Some(Ok(v)) => v,
                    Some(Err(e)) => anyhow::bail!("--limits is not valid JSON: {e}"),
                };
                admin
                    .call(
                        Method::POST,
                        "/admin/keys",
                        json_body(json!({ "name": name, "limits": limits })),
                    )
                    .await
            }
            KeysCommand::List => admin.call(Method::GET, "/admin/keys", None).await,
            KeysCommand::Show { id } => {
                admin
                    .call(Method::GET, &format!("/admin/keys/{id}"), None)
                    .await
            }
            KeysCommand::Limits { id, patch } => {
                let patch: Value = serde_json::from_str(&patch)
                    .map_err(|e| anyhow::anyhow!("the limits patch is not valid JSON: {e}"))?;
                admin
                    .call(
                        Method::PATCH,
                        &format!("/admin/keys/{id}"),
                        json_body(json!({ "limits": patch })),
                    )
                    .await
            }
            KeysCommand::Enable { id } => {
                admin
                    .call(
                        Method::PATCH,
                        &format!("/admin/keys/{id}"),
                        json_body(json!({ "enabled": true })),
                    )
                    .await
            }
            KeysCommand::Disable { id } => {
                admin
                    .call(
                        Method::PATCH,
                        &format!("/admin/keys/{id}"),
                        json_body(json!({ "enabled": false })),
                    )
                    .await
            }
            KeysCommand::Delete { id } => {
                admin
                    .call(Method::DELETE, &format!("/admin/keys/{id}"), None)
                    .await
            }
            KeysCommand::Rotate { id } => {
                admin
                    .call(Method::POST, &format!("/admin/keys/{id}/rotate"), None)
                    .await
            }
        },
        Command::Accounts(cmd) => match cmd {
            AccountsCommand::Add {
                name,
                provider,
                api_key,
                base_url,
                priority,
                models,
                max_concurrency,
                daily_cost_nanousd,
                monthly_cost_nanousd,
                unschedulable,
                api_version,
                deployments,
                model_map,
                region,
                aws_access_key_id,
                refresh_token,
                token_url,
                client_id,
                client_secret,
                expires_at,
                codex_auth,
                gemini_auth,
                project,
                proxy,
            } => {
                // The OAuth client is that of a grant given by hand or read from Gemini CLI's
                // login (Codex CLI's names its own, and its endpoint takes no secret).
                let grant_given = refresh_token.is_some() || gemini_auth.is_some();
                if client_id.is_some() && !grant_given {
                    anyhow::bail!("--client-id goes with --refresh-token or --gemini-auth");
                }
                if client_secret.is_some() && !grant_given {
                    anyhow::bail!("--client-secret goes with --refresh-token or --gemini-auth");
                }
                let provider = provider.unwrap_or_else(|| {
                    if codex_auth.is_some() {
                        "chatgpt"
                    } else if gemini_auth.is_some() {
                        "code-assist"
                    } else {
                        "anthropic"
                    }
                    .to_owned()
                });
                // The environment's secret is Google's: only a Google login's grant takes it
                // (sent to another vendor's endpoint, it would give Google's secret away).
                let client_secret = client_secret.or_else(|| {
                    (grant_given && provider == "code-assist")
                        .then(|| std::env::var(CLIENT_SECRET_ENV).ok())
                        .flatten()
                        .filter(|s| !s.is_empty())
                });
                if gemini_auth.is_some() && client_secret.is_none() {
                    anyhow::bail!(
                        "--gemini-auth needs --client-secret (or {CLIENT_SECRET_ENV}): Google's \
                         token endpoint wants the secret of the OAuth client that logged in"
                    );
                }
                let (api_key, mut oauth) = match (&codex_auth, &gemini_auth) {
                    (Some(path), _) => codex_login(path)?,
                    (None, Some(path)) => gemini_login(path, client_id.as_deref())?,
                    (None, None) => {
                        let oauth = refresh_token.map(|refresh_token| {
                            json!({
                                "refresh_token": refresh_token,
                                "token_url": token_url,
                                "client_id": client_id,
                            })
                        });
                        (api_key.unwrap_or_default(), oauth)
                    }
                };
                if let (Some(oauth), Some(secret)) = (&mut oauth, client_secret) {
                    oauth["client_secret"] = json!(secret);
                }
                let pairs = |flag: &str, given: &[String]| {
                    let mut map = serde_json::Map::new();
                    for pair in given {
                        let Some((model, name)) = pair.split_once('=') else {
                            anyhow::bail!("--{flag} {pair:?}: expected MODEL=NAME");
                        };
                        map.insert(
                            model.trim().to_owned(),
                            Value::String(name.trim().to_owned()),
                        );
                    }
                    Ok(map)
                };
                let map = pairs("deployment", &deployments)?;
                let model_map = pairs("model-map", &model_map)?;
                let mut body = json!({
                    "name": name,
                    "provider": provider,
                    "api_key": api_key,
                    "base_url": base_url,
                    "priority": priority,
                    "models": models,
                    "max_concurrency": max_concurrency,
                    "schedulable": !unschedulable,
                });
                if daily_cost_nanousd.is_some() {
                    body["daily_cost_nanousd"] = json!(daily_cost_nanousd);
                }
                if monthly_cost_nanousd.is_some() {
                    body["monthly_cost_nanousd"] = json!(monthly_cost_nanousd);
                }
                if api_version.is_some() {
                    body["api_version"] = json!(api_version);
                }
                if !map.is_empty() {
                    body["deployments"] = Value::Object(map);
                }
                if !model_map.is_empty() {
                    body["model_map"] = Value::Object(model_map);
                }
                if region.is_some() {
                    body["region"] = json!(region);
                }
                if aws_access_key_id.is_some() {
                    body["aws_access_key_id"] = json!(aws_access_key_id);
                }
                if project.is_some() {
                    body["project"] = json!(project);
                }
                if proxy.is_some() {
                    body["proxy"] = json!(proxy);
                }
                if let Some(mut oauth) = oauth {
                    if expires_at.is_some() {
                        oauth["expires_at"] = json!(expires_at);
                    }
                    body["oauth"] = oauth;
                }
                admin
                    .call(Method::POST, "/admin/accounts", json_body(body))
                    .await
            }
            AccountsCommand::List => admin.call(Method::GET, "/admin/accounts", None).await,
            AccountsCommand::Remove { id } => {
                admin
                    .call(Method::DELETE, &format!("/admin/accounts/{id}"), None)
                    .await
            }
            AccountsCommand::Test { id, model } => {
                let body = model.and_then(|model| json_body(json!({ "model": model })));
                admin
                    .call(Method::POST, &format!("/admin/accounts/{id}/test"), body)
                    .await
            }
        },
        Command::Usage(args) => {
            let query: String = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(
                    [
                        ("key_id", args.key_id),
                        ("account_id", args.account_id),
                        ("model", args.model),
                        ("from", args.from),
                        ("to", args.to),
                        ("granularity", args.granularity),
                    ]
                    .into_iter()
                    .filter_map(|(k, v)| v.map(|v| (k, v))),
                )
                .finish();
            admin
                .call(Method::GET, &format!("/admin/usage?{query}"), None)
                .await
        }
        Command::Pricing(PricingCommand::Import { file }) => {
            let text =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            admin
                .call(
                    Method::POST,
                    "/admin/pricing/import",
                    Some(Bytes::from(text)),
                )
                .await
        }
    };
    admin.close().await;
    println!("{}", serde_json::to_string_pretty(&result?)?);
    Ok(())
}

/// The ChatGPT token endpoint Codex CLI's login renews its tokens at, and the scope it asks for.
const CODEX_TOKEN_URL: &str = "https://auth.openai.com/oauth/token";
const CODEX_SCOPE: &str = "openid profile email";

/// The access token and OAuth grant in Codex CLI's login file (`~/.codex/auth.json`, written by
/// `codex login`): `tokens.access_token`, `tokens.refresh_token`, and the OAuth client they were
/// issued to, the audience of `tokens.id_token`.
fn codex_login(path: &std::path::Path) -> anyhow::Result<(String, Option<Value>)> {
    let file = login_file(path)?;
    let tokens = &file["tokens"];
    let field = |name: &str| {
        tokens[name]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "{}: no tokens.{name} (log in to Codex CLI with a ChatGPT account first)",
                    path.display()
                )
            })
    };
    let (access, refresh, id_token) = (
        field("access_token")?,
        field("refresh_token")?,
        field("id_token")?,
    );
    let client_id = audience(&id_token)
        .ok_or_else(|| anyhow::anyhow!("{}: tokens.id_token names no client", path.display()))?;
    let grant = json!({
        "refresh_token": refresh,
        "token_url": CODEX_TOKEN_URL,
        "client_id": client_id,
        "scope": CODEX_SCOPE,
    });
    Ok((access, Some(grant)))
}

/// A CLI's login file, as JSON.
fn login_file(path: &std::path::Path) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: not JSON: {e}", path.display()))
}

/// The OAuth client an id token was issued to: its `aud`.
fn audience(id_token: &str) -> Option<String> {
    let claims = switchyard::oauth::jwt_claims(id_token)?;
    match claims.get("aud")? {
        Value::String(aud) => Some(aud.clone()),
        Value::Array(aud) => aud.first().and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

/// The environment variable `accounts add` reads an OAuth client's secret from when it is given
/// a grant (kept out of the shell history).
const CLIENT_SECRET_ENV: &str = "SWITCHYARD_OAUTH_CLIENT_SECRET";

/// Google's token endpoint, where Gemini CLI's login renews its tokens.
const GOOGLE_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";

/// The access token and OAuth grant in Gemini CLI's login file (`~/.gemini/oauth_creds.json`,
/// written when it logs in with Google): `access_token`, `refresh_token`, `expiry_date` (unix
/// ms), and the OAuth client they were issued to, `client_id` or else the audience of
/// `id_token`.
fn gemini_login(
    path: &std::path::Path,
    client_id: Option<&str>,
) -> anyhow::Result<(String, Option<Value>)> {
    let file = login_file(path)?;
    let field = |name: &str| {
        file[name]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "{}: no {name} (log in to Gemini CLI with Google first)",
                    path.display()
                )
            })
    };
    let (access, refresh) = (field("access_token")?, field("refresh_token")?);
    let client_id = match client_id {
        Some(id) => id.to_owned(),
        None => file["id_token"]
            .as_str()
            .and_then(audience)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "{}: no id_token naming the OAuth client: give --client-id",
                    path.display()
                )
            })?,
    };
    let mut grant = json!({
        "refresh_token": refresh,
        "token_url": GOOGLE_TOKEN_URL,
        "client_id": client_id,
    });
    if let Some(ms) = file["expiry_date"].as_i64()
        && let Ok(at) = jiff::Timestamp::from_millisecond(ms)
    {
        grant["expires_at"] = json!(at.to_string());
    }
    Ok((access, Some(grant)))
}
