//! Model prices and cost arithmetic in integer nano-dollars.
//!
//! Humans (and LiteLLM) write prices as USD floats; accounting must not use floats (DESIGN
//! principle 7). So every price is converted to an integer exactly once, when a table is loaded,
//! and all cost arithmetic afterwards is integer. Prices are kept per *million* tokens so that
//! even $0.03/MTok (a Haiku 3 cache read) is a whole number of nano-dollars, and a cost is divided
//! by one million only once, after summing, so rounding happens once per request.
//!
//! A model may have a second set of token prices for long prompts: when a request's prompt (every
//! input kind, cached or not) is above [`LONG_CONTEXT_THRESHOLD`] tokens, the whole request is
//! priced at them, as Anthropic and Google bill Claude Sonnet 4 / 4.5 and Gemini 2.5 / 3 Pro.
//! Web searches that Anthropic runs for an answer are priced per search, in the same sum.
//!
//! Lookup is layered: built-in table < an imported LiteLLM table < the configured LiteLLM file <
//! `[pricing.models]` in the config. A higher layer that matches a model in any way (exact name,
//! glob, or the normalised name) wins over everything below it, so an operator's
//! `"claude-sonnet-4-5*"` override also covers the dated names a LiteLLM file lists exactly.

pub mod images;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::catalog::is_glob;
use crate::usage::TokenUsage;
use images::{ImageTable, UsdImagePrices};

/// The built-in price table; its header explains the format.
const BUILTIN_PRICES_TOML: &str = include_str!("../assets/prices.toml");

/// Prices are per million tokens; a cost is `Σ tokens × price / 1_000_000`.
const TOKENS_PER_PRICE_UNIT: u128 = 1_000_000;
/// USD per million tokens → nano-USD per million tokens.
const NANOUSD_PER_USD: f64 = 1e9;
/// USD per token (LiteLLM) → nano-USD per million tokens.
const NANOUSD_PER_MTOK_PER_USD_PER_TOKEN: f64 = 1e15;
/// USD per 1,000 searches → nano-USD per million searches.
const NANOUSD_PER_MSEARCH_PER_USD_PER_1K: f64 = 1e12;
/// A request whose prompt has more tokens than this is priced at its model's long-context prices,
/// if it has any (`above_200k`).
pub const LONG_CONTEXT_THRESHOLD: u64 = 200_000;
/// Anthropic's web search price, $10 per 1,000 searches, in nano-USD per million searches: what a
/// search costs where a price does not say. Only Anthropic answers report searches.
const DEFAULT_WEB_SEARCH: u64 = 10_000_000_000_000;
/// LiteLLM's placeholder entry that documents its schema; its values are not prices.
const LITELLM_SAMPLE_SPEC: &str = "sample_spec";

/// Prices of one model, in nano-USD per million tokens (per million searches for `web_search`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModelPrice {
    /// The token prices of a request whose prompt is at most [`LONG_CONTEXT_THRESHOLD`] tokens,
    /// and of every request when `above_200k` is none.
    pub base: TokenPrices,
    /// The token prices of a whole request whose prompt is above [`LONG_CONTEXT_THRESHOLD`]
    /// tokens, for models whose vendor charges more for a long prompt.
    pub above_200k: Option<TokenPrices>,
    /// Web searches (`TokenUsage::web_search_requests`).
    pub web_search: u64,
}

/// One set of token prices, in nano-USD per million tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenPrices {
    pub input: u64,
    pub output: u64,
    /// Cache writes with the default 5-minute TTL, and cache writes whose TTL the upstream did not say.
    pub cache_write_5m: u64,
    pub cache_write_1h: u64,
    pub cache_read: u64,
}

impl TokenPrices {
    /// See [`ModelPrice::with_anthropic_cache_ratios`].
    pub fn with_anthropic_cache_ratios(input: u64, output: u64) -> TokenPrices {
        TokenPrices {
            input,
            output,
            cache_write_5m: fallback_cache_write_5m(input),
            cache_write_1h: fallback_cache_write_1h(input),
            cache_read: fallback_cache_read(input),
        }
    }
}

impl ModelPrice {
    /// Builds a price from input and output alone, filling the cache prices with Anthropic's
    /// ratios (5-minute write = 1.25 × input, 1-hour write = 2 × input, read = 0.1 × input):
    /// sources that omit cache prices are mostly models whose vendor prices caching that way, and
    /// a plausible price beats charging nothing for cached tokens. No long-context prices; web
    /// searches at Anthropic's price.
    pub fn with_anthropic_cache_ratios(input: u64, output: u64) -> ModelPrice {
        ModelPrice::of(TokenPrices::with_anthropic_cache_ratios(input, output))
    }

    /// `base` at every prompt length; web searches at Anthropic's price.
    pub fn of(base: TokenPrices) -> ModelPrice {
        ModelPrice {
            base,
            above_200k: None,
            web_search: DEFAULT_WEB_SEARCH,
        }
    }

    /// The token prices `u` is charged: the long-context ones when its prompt is above the
    /// threshold and the model has them.
    pub fn token_prices(&self, u: &TokenUsage) -> TokenPrices {
        match self.above_200k {
            Some(long) if u.prompt_tokens() > LONG_CONTEXT_THRESHOLD => long,
            _ => self.base,
        }
    }

    /// The cost of `u` in nano-USD, rounded half up once over the whole sum so that splitting a
    /// response into kinds never adds rounding error per kind. Saturates instead of overflowing:
    /// an absurd count must not wrap around into a small bill.
    pub fn cost_nanousd(&self, u: &TokenUsage) -> u64 {
        self.cost_with_nanousd(u, &[])
    }

    /// As `cost_nanousd`, with `extra` `(tokens, nano-USD per million)` terms in the same sum (image
    /// input tokens, priced apart from text input), so rounding still happens once.
    pub fn cost_with_nanousd(&self, u: &TokenUsage, extra: &[(u64, u64)]) -> u64 {
        let p = self.token_prices(u);
        let terms = [
            (u.input_tokens, p.input),
            (u.output_tokens, p.output),
            (u.cache_creation_5m_input_tokens, p.cache_write_5m),
            (u.cache_creation_unsplit(), p.cache_write_5m),
            (u.cache_creation_1h_input_tokens, p.cache_write_1h),
            (u.cache_read_input_tokens, p.cache_read),
            (u.web_search_requests, self.web_search),
        ];
        // A u64 × u64 product always fits in u128; only the sum can overflow.
        let total = terms
            .iter()
            .chain(extra)
            .fold(0u128, |acc, &(tokens, price)| {
                acc.saturating_add(u128::from(tokens) * u128::from(price))
            });
        let rounded = total.saturating_add(TOKENS_PER_PRICE_UNIT / 2) / TOKENS_PER_PRICE_UNIT;
        u64::try_from(rounded).unwrap_or(u64::MAX)
    }
}

fn fallback_cache_write_5m(input: u64) -> u64 {
    saturate((u128::from(input) * 5 + 2) / 4)
}

fn fallback_cache_write_1h(input: u64) -> u64 {
    input.saturating_mul(2)
}

fn fallback_cache_read(input: u64) -> u64 {
    (input + 5) / 10
}

fn saturate(x: u128) -> u64 {
    u64::try_from(x).unwrap_or(u64::MAX)
}

/// What an image costs when its model has no per-image price and its answer reported no
/// tokens: a standard 1024×1024 image (DALL·E 3, Imagen), $0.04.
const DEFAULT_IMAGE_NANOUSD: u64 = 40_000_000;

/// What a request cost, and whether its model was in the table (else the default price was used,
/// which callers surface so that operators notice unpriced models).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cost {
    pub nanousd: u64,
    pub known_model: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PricingError {
    #[error("price table is not valid: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("LiteLLM price file is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("LiteLLM price file must be a JSON object of model name to prices")]
    LiteLlmShape,
    #[error("price of `{model}`: `{field}` = {value} {reason}")]
    InvalidPrice {
        model: String,
        field: &'static str,
        value: f64,
        reason: &'static str,
    },
    #[error("model pattern `{model}` is not a valid glob: {source}")]
    InvalidPattern {
        model: String,
        source: glob::PatternError,
    },
    #[error("cannot read price file {}: {source}", path.display())]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("price file {}: {source}", path.display())]
    InFile {
        path: PathBuf,
        source: Box<PricingError>,
    },
}

/// Converts a float price once, at load, refusing values that would silently become 0 or
/// u64::MAX through a saturating cast.
fn to_nano(value: f64, scale: f64, model: &str, field: &'static str) -> Result<u64, PricingError> {
    let invalid = |reason| PricingError::InvalidPrice {
        model: model.to_owned(),
        field,
        value,
        reason,
    };
    if !value.is_finite() || value < 0.0 {
        return Err(invalid(
            "is not a valid price (expected a finite, non-negative number)",
        ));
    }
    let scaled = (value * scale).round();
    // 2^64 is exactly representable; anything at or above it does not fit.
    if scaled >= 18_446_744_073_709_551_616.0 {
        return Err(invalid("is too large"));
    }
    // In range and integral after the checks above, so the cast is exact.
    Ok(scaled as u64)
}

/// Prices as written in the config and in `assets/prices.toml`: USD per million tokens.
///
/// The five token prices repeat [`UsdTokenPrices`]' rather than `#[serde(flatten)]` one: through
/// flatten's buffer, an invalid value is reported at the entry (`pricing.models.m`) instead of
/// the option (`pricing.models.m.input`), and an unknown field without the list of known ones
/// (`price_options_are_pinned` in config.rs and `the_usd_price_format_is_pinned` check both).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsdPrices {
    pub input: f64,
    pub output: f64,
    /// Defaults to 1.25 × input (Anthropic's ratio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_5m: Option<f64>,
    /// Defaults to 2 × input (Anthropic's ratio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_1h: Option<f64>,
    /// Defaults to 0.1 × input (Anthropic's ratio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read: Option<f64>,
    /// The prices of a whole request whose prompt (input + cache reads + cache writes) is above
    /// 200,000 tokens; none: the same prices at every length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above_200k: Option<UsdTokenPrices>,
    /// USD per 1,000 web searches (Anthropic's web search tool); defaults to $10, Anthropic's price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_search_per_1k: Option<f64>,
}

/// `above_200k` of [`UsdPrices`]: USD per million tokens, cache prices defaulting to Anthropic's
/// ratios of this `input`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsdTokenPrices {
    pub input: f64,
    pub output: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_5m: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_1h: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read: Option<f64>,
}

/// The names of `UsdTokenPrices`' fields in error messages: at the top of an entry, and under
/// `above_200k`.
const BASE_FIELDS: [&str; 5] = [
    "input",
    "output",
    "cache_write_5m",
    "cache_write_1h",
    "cache_read",
];
const ABOVE_200K_FIELDS: [&str; 5] = [
    "above_200k.input",
    "above_200k.output",
    "above_200k.cache_write_5m",
    "above_200k.cache_write_1h",
    "above_200k.cache_read",
];

impl UsdTokenPrices {
    fn to_token_prices(
        self,
        model: &str,
        fields: &[&'static str; 5],
    ) -> Result<TokenPrices, PricingError> {
        let conv = |v, field| to_nano(v, NANOUSD_PER_USD, model, field);
        let mut prices = TokenPrices::with_anthropic_cache_ratios(
            conv(self.input, fields[0])?,
            conv(self.output, fields[1])?,
        );
        if let Some(v) = self.cache_write_5m {
            prices.cache_write_5m = conv(v, fields[2])?;
        }
        if let Some(v) = self.cache_write_1h {
            prices.cache_write_1h = conv(v, fields[3])?;
        }
        if let Some(v) = self.cache_read {
            prices.cache_read = conv(v, fields[4])?;
        }
        Ok(prices)
    }
}

impl UsdPrices {
    /// Sonnet-level prices: a model nobody priced is more likely to cost this than nothing.
    pub const SONNET: UsdPrices = UsdPrices {
        input: 3.0,
        output: 15.0,
        cache_write_5m: Some(3.75),
        cache_write_1h: Some(6.0),
        cache_read: Some(0.30),
        above_200k: None,
        web_search_per_1k: None,
    };

    /// `model` only names the entry in error messages.
    pub fn to_model_price(&self, model: &str) -> Result<ModelPrice, PricingError> {
        let base = UsdTokenPrices {
            input: self.input,
            output: self.output,
            cache_write_5m: self.cache_write_5m,
            cache_write_1h: self.cache_write_1h,
            cache_read: self.cache_read,
        };
        let mut price = ModelPrice::of(base.to_token_prices(model, &BASE_FIELDS)?);
        price.above_200k = self
            .above_200k
            .map(|long| long.to_token_prices(model, &ABOVE_200K_FIELDS))
            .transpose()?;
        if let Some(v) = self.web_search_per_1k {
            price.web_search = to_nano(
                v,
                NANOUSD_PER_MSEARCH_PER_USD_PER_1K,
                model,
                "web_search_per_1k",
            )?;
        }
        Ok(price)
    }
}

/// The `[pricing]` section of the config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PricingConfig {
    /// Price of models that no table entry matches.
    pub default: UsdPrices,
    /// Overrides by model name or glob; they win over every other source.
    pub models: BTreeMap<String, UsdPrices>,
    /// A LiteLLM `model_prices_and_context_window.json`, so operators can track upstream price
    /// changes without a Switchyard release.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Image prices by model name or glob (docs/images.md); they win over the built-in ones.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub images: BTreeMap<String, UsdImagePrices>,
}

impl Default for PricingConfig {
    fn default() -> Self {
        PricingConfig {
            default: UsdPrices::SONNET,
            models: BTreeMap::new(),
            file: None,
            images: BTreeMap::new(),
        }
    }
}

/// The shape of `assets/prices.toml`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceFile {
    #[serde(default)]
    models: BTreeMap<String, UsdPrices>,
    #[serde(default)]
    images: BTreeMap<String, UsdImagePrices>,
}

/// A glob entry, with what ranks it against other matching globs.
#[derive(Debug, Clone)]
struct GlobEntry {
    key: String,
    pattern: glob::Pattern,
    /// Characters before the first wildcard: the longer, the more specific.
    literal_prefix: usize,
    /// Non-wildcard characters overall; breaks ties between equal prefixes.
    literal_chars: usize,
    price: ModelPrice,
}

/// Prices from one source.
#[derive(Debug, Clone, Default)]
struct Layer {
    exact: foldhash::HashMap<String, ModelPrice>,
    /// Most specific first, so the first match is the answer.
    globs: Vec<GlobEntry>,
}

impl Layer {
    fn insert(&mut self, key: &str, price: ModelPrice) -> Result<(), PricingError> {
        if !is_glob(key) {
            self.exact.insert(key.to_owned(), price);
            return Ok(());
        }
        let pattern = glob::Pattern::new(key).map_err(|source| PricingError::InvalidPattern {
            model: key.to_owned(),
            source,
        })?;
        let literal_prefix = key.find(['*', '?', '[']).unwrap_or(key.len());
        let literal_chars = key.chars().filter(|c| !matches!(c, '*' | '?')).count();
        self.globs.retain(|g| g.key != key);
        self.globs.push(GlobEntry {
            key: key.to_owned(),
            pattern,
            literal_prefix,
            literal_chars,
            price,
        });
        Ok(())
    }

    /// Orders the globs most specific first; call once after the inserts.
    fn finish(mut self) -> Layer {
        self.globs.sort_by(|a, b| {
            b.literal_prefix
                .cmp(&a.literal_prefix)
                .then(b.literal_chars.cmp(&a.literal_chars))
                .then(a.key.cmp(&b.key))
        });
        self
    }

    fn lookup(&self, name: &str) -> Option<&ModelPrice> {
        self.exact.get(name).or_else(|| {
            self.globs
                .iter()
                .find(|g| g.pattern.matches(name))
                .map(|g| &g.price)
        })
    }

    fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.globs.is_empty()
    }

    fn keys(&self) -> impl Iterator<Item = &str> {
        self.exact
            .keys()
            .map(String::as_str)
            .chain(self.globs.iter().map(|g| g.key.as_str()))
    }
}

/// Model name or glob → price, from one or more sources layered on top of each other.
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    /// Lowest priority first.
    layers: Vec<Layer>,
}

impl PriceTable {
    /// The table compiled into the binary from `assets/prices.toml`.
    pub fn builtin() -> Result<PriceTable, PricingError> {
        PriceTable::from_toml_str(BUILTIN_PRICES_TOML)
    }

    /// Reads the `assets/prices.toml` format: `[models."<name or glob>"]` tables of USD per MTok.
    pub fn from_toml_str(text: &str) -> Result<PriceTable, PricingError> {
        let file: PriceFile = toml::from_str(text)?;
        PriceTable::from_usd(&file.models)
    }

    /// Builds a single-source table from USD prices keyed by model name or glob.
    pub fn from_usd(models: &BTreeMap<String, UsdPrices>) -> Result<PriceTable, PricingError> {
        let mut layer = Layer::default();
        for (key, usd) in models {
            layer.insert(key, usd.to_model_price(key)?)?;
        }
        Ok(PriceTable::from_layer(layer.finish()))
    }

    /// Reads LiteLLM's `model_prices_and_context_window.json` (USD per token).
    ///
    /// Entries without both `input_cost_per_token` and `output_cost_per_token` (images, audio,
    /// the `sample_spec` placeholder) are skipped. Missing cache prices fall back to Anthropic's
    /// ratios (see [`ModelPrice::with_anthropic_cache_ratios`]). The `*_above_200k_tokens` prices
    /// become the long-context prices (a missing input or output one is the base price, missing
    /// cache ones Anthropic's ratios of the long-context input); other tiers (`_above_128k_`,
    /// `_above_272k_`, `_priority`, …) are ignored. Names carrying their own provider as a prefix
    /// (`anthropic/claude-x` with `litellm_provider = "anthropic"`) are also stored under the bare
    /// name, because clients send the bare name, unless an entry already has that bare name.
    pub fn from_litellm_json(text: &str) -> Result<PriceTable, PricingError> {
        let root: serde_json::Value = serde_json::from_str(text)?;
        let entries = root.as_object().ok_or(PricingError::LiteLlmShape)?;
        let mut layer = Layer::default();
        let mut bare_names = Vec::new();
        for (name, entry) in entries {
            if name == LITELLM_SAMPLE_SPEC {
                continue;
            }
            let Some(entry) = entry.as_object() else {
                continue;
            };
            let Some(price) = litellm_price(name, entry)? else {
                continue;
            };
            // LiteLLM names are names, never patterns, even if one contained a `[`.
            layer.exact.insert(name.clone(), price);
            if let Some(bare) = strip_own_provider(name, entry) {
                bare_names.push((bare, price));
            }
        }
        // After all plain names are in, so a prefixed twin never shadows the plain entry
        // regardless of the order of the file.
        for (bare, price) in bare_names {
            layer.exact.entry(bare.to_owned()).or_insert(price);
        }
        Ok(PriceTable::from_layer(layer))
    }

    fn from_layer(layer: Layer) -> PriceTable {
        let layers = if layer.is_empty() {
            Vec::new()
        } else {
            vec![layer]
        };
        PriceTable { layers }
    }

    /// Puts `other` on top: for any model that `other` prices at all, its price wins.
    pub fn overlay(&mut self, other: PriceTable) {
        self.layers.extend(other.layers);
    }

    /// Distinct model names and globs across all sources.
    pub fn len(&self) -> usize {
        let mut seen = HashSet::new();
        for layer in &self.layers {
            seen.extend(layer.keys());
        }
        seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.layers.iter().all(Layer::is_empty)
    }

    /// The price of `model`: from the highest layer that knows it, by exact name, else by the most
    /// specific matching glob, else the same for the name with vendor decorations removed
    /// (see [`normalise_model`]).
    pub fn price(&self, model: &str) -> Option<&ModelPrice> {
        let normalised = normalise_model(model);
        let normalised = (normalised != model).then_some(normalised);
        self.layers.iter().rev().find_map(|layer| {
            layer
                .lookup(model)
                .or_else(|| normalised.and_then(|n| layer.lookup(n)))
        })
    }
}

fn litellm_price(
    name: &str,
    entry: &serde_json::Map<String, serde_json::Value>,
) -> Result<Option<ModelPrice>, PricingError> {
    let field = |field: &'static str| -> Result<Option<u64>, PricingError> {
        entry
            .get(field)
            .and_then(serde_json::Value::as_f64)
            .map(|v| to_nano(v, NANOUSD_PER_MTOK_PER_USD_PER_TOKEN, name, field))
            .transpose()
    };
    let (Some(input), Some(output)) = (
        field("input_cost_per_token")?,
        field("output_cost_per_token")?,
    ) else {
        return Ok(None);
    };
    let mut price = ModelPrice::with_anthropic_cache_ratios(input, output);
    if let Some(v) = field("cache_creation_input_token_cost")? {
        price.base.cache_write_5m = v;
    }
    if let Some(v) = field("cache_creation_input_token_cost_above_1hr")? {
        price.base.cache_write_1h = v;
    }
    if let Some(v) = field("cache_read_input_token_cost")? {
        price.base.cache_read = v;
    }
    let (long_input, long_output) = (
        field("input_cost_per_token_above_200k_tokens")?,
        field("output_cost_per_token_above_200k_tokens")?,
    );
    if long_input.is_some() || long_output.is_some() {
        let mut long = TokenPrices::with_anthropic_cache_ratios(
            long_input.unwrap_or(input),
            long_output.unwrap_or(output),
        );
        if let Some(v) = field("cache_creation_input_token_cost_above_200k_tokens")? {
            long.cache_write_5m = v;
        }
        if let Some(v) = field("cache_creation_input_token_cost_above_1hr_above_200k_tokens")? {
            long.cache_write_1h = v;
        }
        if let Some(v) = field("cache_read_input_token_cost_above_200k_tokens")? {
            long.cache_read = v;
        }
        price.above_200k = Some(long);
    }
    Ok(Some(price))
}

/// `anthropic/claude-x` → `claude-x` when the entry's `litellm_provider` is `anthropic`; other
/// prefixes (`vertex_ai/`, `openrouter/anthropic/`) are resellers whose prices may differ.
fn strip_own_provider<'a>(
    name: &'a str,
    entry: &serde_json::Map<String, serde_json::Value>,
) -> Option<&'a str> {
    let provider = entry.get("litellm_provider")?.as_str()?;
    let bare = name.strip_prefix(provider)?.strip_prefix('/')?;
    (!bare.is_empty()).then_some(bare)
}

/// The bare Anthropic model name inside vendor spellings, so one table entry prices all of them:
/// Bedrock `us.anthropic.claude-sonnet-4-5-20250929-v1:0`, Vertex `claude-sonnet-4-5@20250929`,
/// and the dated `claude-sonnet-4-5-20250929` all become `claude-sonnet-4-5`.
pub fn normalise_model(model: &str) -> &str {
    let mut name = model;
    // Bedrock: `anthropic.` optionally behind a region or profile prefix such as `us.`/`global.`.
    if let Some(idx) = name.find("anthropic.") {
        let region = &name[..idx];
        let region_ok = region.is_empty()
            || region
                .strip_suffix('.')
                .is_some_and(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_lowercase()));
        if region_ok {
            name = &name[idx + "anthropic.".len()..];
        }
    }
    // Vertex: `@<version>`.
    if let Some((base, _)) = name.split_once('@') {
        name = base;
    }
    // Bedrock: `-v<major>:<minor>`. A bare `-v<n>` is left alone: it often names a different
    // model (`deepseek-v3`), and Vertex's `claude-3-5-sonnet-v2` is matched by the globs anyway.
    if let Some(idx) = name.rfind("-v")
        && let Some((major, minor)) = name[idx + 2..].split_once(':')
        && is_digits(major)
        && is_digits(minor)
    {
        name = &name[..idx];
    }
    // Release date: `-YYYYMMDD`.
    if let Some(idx) = name.len().checked_sub(9)
        && name.as_bytes()[idx] == b'-'
        && is_digits(&name[idx + 1..])
    {
        name = &name[..idx];
    }
    name
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// The price table plus what to charge for models it does not know.
#[derive(Debug, Clone)]
pub struct Pricing {
    table: PriceTable,
    default: ModelPrice,
    images: ImageTable,
    /// Resolved prices by model name: a lookup tries every glob of every layer, and the same few
    /// models are priced twice per request (the reservation and the settle). Bounded: names past
    /// `RESOLVED_MAX` are resolved every time.
    resolved:
        std::sync::Arc<dashmap::DashMap<String, (ModelPrice, bool), foldhash::fast::RandomState>>,
}

/// How many model names `Pricing` remembers the price of.
const RESOLVED_MAX: usize = 1024;

/// What an image request's per-image price depends on, beyond its model.
#[derive(Debug, Clone, Copy, Default)]
pub struct ImageAsk<'a> {
    pub size: Option<&'a str>,
    pub quality: Option<&'a str>,
    /// Of `TokenUsage::input_tokens`, how many were image input (priced apart).
    pub image_input_tokens: u64,
}

impl Pricing {
    pub fn new(table: PriceTable, default: ModelPrice) -> Pricing {
        Pricing {
            table,
            default,
            images: ImageTable::default(),
            resolved: Default::default(),
        }
    }

    /// The built-in image prices (`[images.…]` in `assets/prices.toml`).
    pub fn builtin_images() -> Result<ImageTable, PricingError> {
        let file: PriceFile = toml::from_str(BUILTIN_PRICES_TOML)?;
        ImageTable::from_usd(&file.images)
    }

    pub fn images(&self) -> &ImageTable {
        &self.images
    }

    /// The cost of an image request: `usage.images` at the model's per-image price for `ask`'s
    /// size and quality (when it has one), plus its tokens at the model's token prices (when the
    /// upstream reported any), image input tokens at the model's `image_input` price. The model
    /// is known when either price applied; with neither, tokens cost the default price.
    pub fn image_cost(&self, model: &str, ask: &ImageAsk<'_>, usage: &TokenUsage) -> Cost {
        let image = self.images.price(model);
        let per_image = image.and_then(|p| p.per_image(ask.size, ask.quality));
        let tokens = TokenUsage {
            images: 0,
            ..*usage
        };
        // An image model without a per-image price that reported no tokens either is priced as
        // a standard image, not free: a cost budget must still see it.
        let images_nanousd = per_image
            .or(tokens.is_empty().then_some(DEFAULT_IMAGE_NANOUSD))
            .map_or(0, |p| p.saturating_mul(usage.images));
        let (tokens_nanousd, tokens_known) = if tokens.is_empty() {
            (0, false)
        } else {
            let (price, known) = self.price(model);
            let image_input = ask.image_input_tokens.min(tokens.input_tokens);
            let text = TokenUsage {
                input_tokens: tokens.input_tokens - image_input,
                ..tokens
            };
            let image_input_price = image
                .and_then(|p| p.image_input)
                .unwrap_or(price.base.input);
            (
                price.cost_with_nanousd(&text, &[(image_input, image_input_price)]),
                known,
            )
        };
        Cost {
            nanousd: images_nanousd.saturating_add(tokens_nanousd),
            known_model: per_image.is_some() || tokens_known,
        }
    }

    /// Layers, lowest first: built-in < `imported` (e.g. a LiteLLM file imported earlier into the
    /// store) < `cfg.file` < `cfg.models`.
    pub fn from_config(
        cfg: &PricingConfig,
        imported: Option<PriceTable>,
    ) -> Result<Pricing, PricingError> {
        let mut table = PriceTable::builtin()?;
        if let Some(imported) = imported {
            table.overlay(imported);
        }
        if let Some(path) = &cfg.file {
            let text = std::fs::read_to_string(path).map_err(|source| PricingError::ReadFile {
                path: path.clone(),
                source,
            })?;
            let file = PriceTable::from_litellm_json(&text).map_err(|e| PricingError::InFile {
                path: path.clone(),
                source: Box::new(e),
            })?;
            table.overlay(file);
        }
        table.overlay(PriceTable::from_usd(&cfg.models)?);
        let default = cfg.default.to_model_price("pricing.default")?;
        let mut images = Pricing::builtin_images()?;
        images.overlay(ImageTable::from_usd(&cfg.images)?);
        Ok(Pricing {
            table,
            default,
            images,
            resolved: Default::default(),
        })
    }

    pub fn table(&self) -> &PriceTable {
        &self.table
    }

    pub fn default_price(&self) -> &ModelPrice {
        &self.default
    }

    /// The price used for `model`, and whether it came from the table.
    pub fn price(&self, model: &str) -> (&ModelPrice, bool) {
        match self.table.price(model) {
            Some(price) => (price, true),
            None => (&self.default, false),
        }
    }

    /// `price`, remembered per model name.
    fn resolved(&self, model: &str) -> (ModelPrice, bool) {
        if let Some(hit) = self.resolved.get(model) {
            return *hit;
        }
        let (price, known) = self.price(model);
        if self.resolved.len() < RESOLVED_MAX {
            self.resolved.insert(model.to_owned(), (*price, known));
        }
        (*price, known)
    }

    pub fn cost(&self, model: &str, usage: &TokenUsage) -> Cost {
        let (price, known_model) = self.resolved(model);
        Cost {
            nanousd: price.cost_nanousd(usage),
            known_model,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const USD: u64 = 1_000_000_000;

    fn price(input: u64, output: u64, w5: u64, w1: u64, read: u64) -> ModelPrice {
        ModelPrice::of(TokenPrices {
            input,
            output,
            cache_write_5m: w5,
            cache_write_1h: w1,
            cache_read: read,
        })
    }

    const OPUS_4: ModelPrice = ModelPrice {
        base: TokenPrices {
            input: 15 * USD,
            output: 75 * USD,
            cache_write_5m: 18_750_000_000,
            cache_write_1h: 30 * USD,
            cache_read: 1_500_000_000,
        },
        above_200k: None,
        web_search: DEFAULT_WEB_SEARCH,
    };
    const OPUS_4_5: ModelPrice = ModelPrice {
        base: TokenPrices {
            input: 5 * USD,
            output: 25 * USD,
            cache_write_5m: 6_250_000_000,
            cache_write_1h: 10 * USD,
            cache_read: 500_000_000,
        },
        above_200k: None,
        web_search: DEFAULT_WEB_SEARCH,
    };
    const SONNET: ModelPrice = ModelPrice {
        base: TokenPrices {
            input: 3 * USD,
            output: 15 * USD,
            cache_write_5m: 3_750_000_000,
            cache_write_1h: 6 * USD,
            cache_read: 300_000_000,
        },
        above_200k: None,
        web_search: DEFAULT_WEB_SEARCH,
    };
    /// Sonnet 4 and 4.5: twice the input price and 1.5 × the output price above 200k prompt
    /// tokens, cache prices at the same ratios of the higher input price.
    const SONNET_1M: ModelPrice = ModelPrice {
        above_200k: Some(TokenPrices {
            input: 6 * USD,
            output: 22_500_000_000,
            cache_write_5m: 7_500_000_000,
            cache_write_1h: 12 * USD,
            cache_read: 600_000_000,
        }),
        ..SONNET
    };
    const HAIKU_4_5: ModelPrice = ModelPrice {
        base: TokenPrices {
            input: USD,
            output: 5 * USD,
            cache_write_5m: 1_250_000_000,
            cache_write_1h: 2 * USD,
            cache_read: 100_000_000,
        },
        above_200k: None,
        web_search: DEFAULT_WEB_SEARCH,
    };

    fn input(n: u64) -> TokenUsage {
        TokenUsage {
            input_tokens: n,
            ..TokenUsage::default()
        }
    }

    #[test]
    fn builtin_parses() {
        let table = PriceTable::builtin().unwrap();
        assert_eq!(table.len(), 51);
    }

    #[test]
    fn dedicated_models_are_not_priced_by_a_broader_glob() {
        let p = Pricing::from_config(&PricingConfig::default(), None).unwrap();
        // A million tokens in and a million out: input + output price.
        let u = TokenUsage {
            input_tokens: 1_000_000,
            output_tokens: 1_000_000,
            ..TokenUsage::default()
        };
        for (model, nanousd) in [
            // `o1*`, `o3*`, `o4-mini*`, `gpt-5*`, `gpt-4o*` match all of these too.
            ("o1-pro", 750 * USD),
            ("o1-pro-2025-03-19", 750 * USD),
            ("o1", 75 * USD),
            ("o1-2024-12-17", 75 * USD),
            ("o1-mini", 5_500_000_000),
            ("o3-pro", 100 * USD),
            ("o3-pro-2025-06-10", 100 * USD),
            ("o3-deep-research", 50 * USD),
            ("o3-deep-research-2025-06-26", 50 * USD),
            ("o3", 10 * USD),
            ("o3-mini", 5_500_000_000),
            ("o4-mini-deep-research", 10 * USD),
            ("o4-mini-deep-research-2025-06-26", 10 * USD),
            ("o4-mini", 5_500_000_000),
            ("gpt-5-pro", 135 * USD),
            ("gpt-5-pro-2025-10-06", 135 * USD),
            ("gpt-5.2-pro", 189 * USD),
            ("gpt-5.4-pro", 210 * USD),
            ("gpt-5.5-pro", 210 * USD),
            ("gpt-5", 11_250_000_000),
            ("gpt-5-mini", 2_250_000_000),
            ("gpt-4o-2024-05-13", 20 * USD),
            ("gpt-4o", 12_500_000_000),
            ("gpt-4o-2024-08-06", 12_500_000_000),
            ("gpt-4o-mini", 750_000_000),
        ] {
            let c = p.cost(model, &u);
            assert!(c.known_model, "{model}");
            assert_eq!(c.nanousd, nanousd, "{model}");
        }
        // The dedicated models bill no discount for cached input.
        let cached = TokenUsage {
            cache_read_input_tokens: 1_000_000,
            ..TokenUsage::default()
        };
        assert_eq!(p.cost("o1-pro", &cached).nanousd, 150 * USD);
        assert_eq!(p.cost("o3-deep-research", &cached).nanousd, 2_500_000_000);
    }

    #[test]
    fn long_prompts_pay_the_long_context_prices() {
        let p = Pricing::from_config(&PricingConfig::default(), None).unwrap();
        // Anthropic: input + cache reads + cache writes, 200,000 at most at the base prices.
        let claude = |input| TokenUsage {
            input_tokens: input,
            output_tokens: 1_000,
            cache_creation_input_tokens: 50_000,
            cache_creation_5m_input_tokens: 50_000,
            cache_read_input_tokens: 50_000,
            ..TokenUsage::default()
        };
        let (at, above) = (claude(100_000), claude(100_001));
        assert_eq!(at.prompt_tokens(), LONG_CONTEXT_THRESHOLD);
        // 100k × $3 + 50k × $3.75 + 50k × $0.30 + 1k × $15.
        let base = 300_000_000 + 187_500_000 + 15_000_000 + 15_000_000;
        // 100,001 × $6 + 50k × $7.50 + 50k × $0.60 + 1k × $22.50.
        let long = 600_006_000 + 375_000_000 + 30_000_000 + 22_500_000;
        for model in [
            "claude-sonnet-4-5",
            "claude-sonnet-4-5-20250929",
            "claude-sonnet-4-20250514",
            "claude-sonnet-4-0",
            "us.anthropic.claude-sonnet-4-20250514-v1:0",
            "claude-sonnet-4-5@20250929",
        ] {
            assert_eq!(p.cost(model, &at).nanousd, base, "{model}");
            assert_eq!(p.cost(model, &above).nanousd, long, "{model}");
        }
        // A 1-hour write above the threshold: $12 (2 × $6).
        let hour = TokenUsage {
            cache_creation_input_tokens: 200_001,
            cache_creation_1h_input_tokens: 200_001,
            ..TokenUsage::default()
        };
        assert_eq!(p.cost("claude-sonnet-4-5", &hour).nanousd, 2_400_012_000);
        // Sonnet 4.6 and Opus 4.6 serve the 1M context at their usual prices.
        let flat = 100_001 * 3_000 + 187_500_000 + 15_000_000 + 15_000_000;
        assert_eq!(p.cost("claude-sonnet-4-6", &above).nanousd, flat);
        assert_eq!(
            p.cost("claude-opus-4-6", &above).nanousd,
            100_001 * 5_000 + 312_500_000 + 25_000_000 + 25_000_000
        );

        // Gemini: the prompt, cached tokens included.
        let gemini = |input| TokenUsage {
            input_tokens: input,
            output_tokens: 1_000,
            cache_read_input_tokens: 50_000,
            ..TokenUsage::default()
        };
        // 150k × $1.25 + 50k × $0.125 + 1k × $10, then 150,001 × $2.50 + 50k × $0.25 + 1k × $15.
        assert_eq!(
            p.cost("gemini-2.5-pro", &gemini(150_000)).nanousd,
            187_500_000 + 6_250_000 + 10_000_000
        );
        assert_eq!(
            p.cost("gemini-2.5-pro", &gemini(150_001)).nanousd,
            375_002_500 + 12_500_000 + 15_000_000
        );
        for model in ["gemini-3-pro-preview", "gemini-3.1-pro-preview"] {
            // 150k × $2 + 50k × $0.20 + 1k × $12, then 150,001 × $4 + 50k × $0.40 + 1k × $18.
            assert_eq!(
                p.cost(model, &gemini(150_000)).nanousd,
                300_000_000 + 10_000_000 + 12_000_000,
                "{model}"
            );
            assert_eq!(
                p.cost(model, &gemini(150_001)).nanousd,
                600_004_000 + 20_000_000 + 18_000_000,
                "{model}"
            );
        }
        // No long-context price: the same at every length.
        assert_eq!(
            p.cost("gemini-2.5-flash", &gemini(150_001)).nanousd,
            p.cost("gemini-2.5-flash", &gemini(150_000)).nanousd + 300
        );
    }

    #[test]
    fn web_searches_cost_ten_dollars_a_thousand_unless_priced() {
        let p = Pricing::from_config(&PricingConfig::default(), None).unwrap();
        let searches = |n| TokenUsage {
            web_search_requests: n,
            ..TokenUsage::default()
        };
        assert_eq!(
            p.cost("claude-haiku-4-5", &searches(1_000)).nanousd,
            10 * USD
        );
        assert_eq!(
            p.cost("claude-sonnet-4-5", &searches(1)).nanousd,
            10_000_000
        );
        // With tokens: one sum, one rounding.
        let u = TokenUsage {
            input_tokens: 1_000,
            output_tokens: 100,
            web_search_requests: 3,
            ..TokenUsage::default()
        };
        assert_eq!(
            p.cost("claude-sonnet-4-5", &u).nanousd,
            3_000_000 + 1_500_000 + 30_000_000
        );
        // An unknown model's default price, too.
        assert_eq!(p.cost("mystery", &searches(2)).nanousd, 20_000_000);
        // A price of its own, in the config.
        let cfg: PricingConfig = toml::from_str(
            "[models.\"claude-haiku-4-5*\"]\ninput = 1.0\noutput = 5.0\nweb_search_per_1k = 25.0\n",
        )
        .unwrap();
        let p = Pricing::from_config(&cfg, None).unwrap();
        assert_eq!(
            p.cost("claude-haiku-4-5", &searches(4)).nanousd,
            100_000_000
        );
    }

    #[test]
    fn long_context_prices_in_the_config() {
        let cfg: PricingConfig = toml::from_str(
            r#"
            [models."my-model"]
            input = 1.0
            output = 2.0
            [models."my-model".above_200k]
            input = 2.0
            output = 3.0
            cache_read = 0.5
            "#,
        )
        .unwrap();
        let p = Pricing::from_config(&cfg, None).unwrap();
        let (price, known) = p.price("my-model");
        assert!(known);
        assert_eq!(
            price.above_200k,
            Some(TokenPrices {
                input: 2 * USD,
                output: 3 * USD,
                // Anthropic's ratios of the long-context input, where not given.
                cache_write_5m: 2_500_000_000,
                cache_write_1h: 4 * USD,
                cache_read: USD / 2,
            })
        );
        assert_eq!(p.cost("my-model", &input(200_000)).nanousd, 200_000_000);
        assert_eq!(p.cost("my-model", &input(200_001)).nanousd, 400_002_000);
        // Printed by `switchyard config` and read back alike.
        let text = toml::to_string(&cfg).unwrap();
        assert_eq!(toml::from_str::<PricingConfig>(&text).unwrap(), cfg);

        let err = PriceTable::from_toml_str(
            "[models.m]\ninput = 1.0\noutput = 1.0\n[models.m.above_200k]\ninput = 2.0\noutput = 2.0\ncache_read = -1.0\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("above_200k.cache_read"), "{err}");
        let err = PriceTable::from_toml_str(
            "[models.m]\ninput = 1.0\noutput = 1.0\n[models.m.above_200k]\ninput = 2.0\noutput = 2.0\nweb_search_per_1k = 1.0\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("web_search_per_1k"), "{err}");
        let err = PriceTable::from_toml_str(
            "[models.m]\ninput = 1.0\noutput = 1.0\nweb_search_per_1k = nan\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("web_search_per_1k"), "{err}");
    }

    #[test]
    fn openai_gemini_and_deepseek_models_are_priced() {
        let p = Pricing::from_config(&PricingConfig::default(), None).unwrap();
        let u = TokenUsage {
            input_tokens: 1_000_000,
            output_tokens: 1_000_000,
            cache_read_input_tokens: 1_000_000,
            ..TokenUsage::default()
        };
        let usd = |model: &str| {
            let c = p.cost(model, &u);
            assert!(c.known_model, "{model}");
            c.nanousd
        };
        // in + out + cached input, per million each (a 2M-token prompt: long-context prices
        // where a model has them).
        assert_eq!(usd("gpt-4o-2024-08-06"), 13_750_000_000);
        assert_eq!(usd("gpt-4o-mini"), 825_000_000);
        assert_eq!(usd("gpt-5-codex"), 11_375_000_000);
        assert_eq!(usd("gpt-5-mini"), 2_275_000_000);
        assert_eq!(usd("o4-mini"), 5_775_000_000);
        assert_eq!(usd("gemini-2.5-flash"), 2_875_000_000);
        assert_eq!(usd("gemini-2.5-flash-lite"), 525_000_000);
        assert_eq!(usd("gemini-2.5-pro"), 17_750_000_000);
        assert_eq!(usd("deepseek-chat"), 728_000_000);
        assert_eq!(usd("text-embedding-3-small"), 40_000_000);
    }

    #[test]
    fn images_are_priced_per_image_or_per_token() {
        let p = Pricing::from_config(&PricingConfig::default(), None).unwrap();
        let images = |n| TokenUsage {
            images: n,
            ..TokenUsage::default()
        };
        let ask = |size, quality| ImageAsk {
            size,
            quality,
            image_input_tokens: 0,
        };
        // DALL-E 3: per image by size and quality.
        let c = p.image_cost(
            "dall-e-3",
            &ask(Some("1024x1024"), Some("standard")),
            &images(2),
        );
        assert_eq!(
            c,
            Cost {
                nanousd: 80_000_000,
                known_model: true
            }
        );
        let c = p.image_cost("dall-e-3", &ask(Some("1792x1024"), Some("hd")), &images(1));
        assert_eq!(c.nanousd, 120_000_000);
        assert_eq!(
            p.image_cost("dall-e-3", &ask(None, None), &images(1))
                .nanousd,
            40_000_000
        );
        assert_eq!(
            p.image_cost("imagen-4.0-generate-001", &ask(None, None), &images(3))
                .nanousd,
            120_000_000
        );
        // gpt-image-1: 10 text + 40 image input tokens, 50 output tokens; no per-image price.
        let u = TokenUsage {
            input_tokens: 50,
            output_tokens: 50,
            images: 1,
            ..TokenUsage::default()
        };
        let edit = ImageAsk {
            image_input_tokens: 40,
            ..ImageAsk::default()
        };
        // (10 × $5 + 40 × $10 + 50 × $40) per million tokens = $0.00245.
        assert_eq!(
            p.image_cost("gpt-image-1", &edit, &u),
            Cost {
                nanousd: 2_450_000,
                known_model: true
            }
        );
        // HD without a size: the default size's HD price, not the standard one.
        assert_eq!(
            p.image_cost("dall-e-3", &ask(None, Some("hd")), &images(1))
                .nanousd,
            80_000_000
        );
        assert_eq!(
            p.image_cost("imagen-3.0-fast-generate-001", &ask(None, None), &images(2))
                .nanousd,
            40_000_000
        );
        // Nothing priced: each image at the default price (not free), the model unknown.
        let c = p.image_cost("unknown-painter", &ask(None, None), &images(2));
        assert_eq!(
            c,
            Cost {
                nanousd: 2 * DEFAULT_IMAGE_NANOUSD,
                known_model: false
            }
        );
    }

    #[test]
    fn builtin_prices_current_models() {
        let t = PriceTable::builtin().unwrap();
        assert_eq!(t.price("claude-opus-4-8"), Some(&OPUS_4_5));
        assert_eq!(t.price("claude-opus-4-5-20251101"), Some(&OPUS_4_5));
        assert_eq!(t.price("claude-opus-4-6"), Some(&OPUS_4_5));
        assert_eq!(t.price("claude-opus-4-1-20250805"), Some(&OPUS_4));
        assert_eq!(t.price("claude-opus-4-20250514"), Some(&OPUS_4));
        assert_eq!(t.price("claude-opus-4-0"), Some(&OPUS_4));
        assert_eq!(t.price("claude-sonnet-4-5-20250929"), Some(&SONNET_1M));
        assert_eq!(t.price("claude-sonnet-4-20250514"), Some(&SONNET_1M));
        assert_eq!(t.price("claude-sonnet-4-6"), Some(&SONNET));
        assert_eq!(t.price("claude-3-7-sonnet-latest"), Some(&SONNET));
        assert_eq!(t.price("claude-3-5-sonnet-20241022"), Some(&SONNET));
        assert_eq!(t.price("claude-haiku-4-5"), Some(&HAIKU_4_5));
        assert_eq!(t.price("claude-haiku-4-5-20251001"), Some(&HAIKU_4_5));
        assert_eq!(
            t.price("claude-3-5-haiku-20241022"),
            Some(&price(800_000_000, 4 * USD, USD, 1_600_000_000, 80_000_000))
        );
        assert_eq!(
            t.price("claude-3-haiku-20240307"),
            Some(&price(
                250_000_000,
                1_250_000_000,
                300_000_000,
                500_000_000,
                30_000_000
            ))
        );
        assert_eq!(t.price("llama-3-70b"), None);
        assert_eq!(t.price("claude-2.1"), None);
    }

    /// The entries of `[pricing.models]` and `assets/prices.toml`, in USD, as read.
    const USD_ENTRIES: &str = r#"
[models."m*"]
input = 3
output = 15.0
cache_write_5m = 3.75
cache_write_1h = 6
cache_read = 0.3
web_search_per_1k = 25

[models."m*".above_200k]
input = 6
output = 22.5
cache_write_5m = 7.5
cache_write_1h = 12
cache_read = 0.6

[models.short]
input = 1
output = 2.5
"#;

    /// The format of a price entry (the config's `[pricing.default]` and `[pricing.models."…"]`,
    /// and `assets/prices.toml`), pinned: every field's name, integers read as numbers, what is
    /// printed back, and what is refused in what words.
    #[test]
    fn the_usd_price_format_is_pinned() {
        let long = TokenUsage {
            input_tokens: LONG_CONTEXT_THRESHOLD + 1,
            ..TokenUsage::default()
        };
        let check = |p: &ModelPrice| {
            assert_eq!(
                p.token_prices(&input(1)),
                TokenPrices {
                    input: 3 * USD,
                    output: 15 * USD,
                    cache_write_5m: 3_750_000_000,
                    cache_write_1h: 6 * USD,
                    cache_read: 300_000_000,
                }
            );
            assert_eq!(
                p.token_prices(&long),
                TokenPrices {
                    input: 6 * USD,
                    output: 22_500_000_000,
                    cache_write_5m: 7_500_000_000,
                    cache_write_1h: 12 * USD,
                    cache_read: 600_000_000,
                }
            );
            assert_eq!(p.web_search, 25_000_000_000_000);
        };
        let short = |p: &ModelPrice| {
            assert_eq!(
                p.token_prices(&long),
                TokenPrices::with_anthropic_cache_ratios(USD, 2_500_000_000)
            );
            assert_eq!(p.web_search, DEFAULT_WEB_SEARCH);
        };

        // The price file.
        let table = PriceTable::from_toml_str(USD_ENTRIES).unwrap();
        check(table.price("m1").unwrap());
        short(table.price("short").unwrap());

        // The config, and what it prints (`toml::to_string`, as `switchyard config` does).
        let cfg: PricingConfig = toml::from_str(&format!(
            "[default]\ninput = 1\noutput = 2.5\n{USD_ENTRIES}"
        ))
        .unwrap();
        let pricing = Pricing::from_config(&cfg, None).unwrap();
        check(pricing.price("m1").0);
        short(pricing.default_price());
        let printed = toml::to_string(&cfg).unwrap();
        assert_eq!(
            printed,
            r#"[default]
input = 1.0
output = 2.5

[models."m*"]
input = 3.0
output = 15.0
cache_write_5m = 3.75
cache_write_1h = 6.0
cache_read = 0.3
web_search_per_1k = 25.0

[models."m*".above_200k]
input = 6.0
output = 22.5
cache_write_5m = 7.5
cache_write_1h = 12.0
cache_read = 0.6

[models.short]
input = 1.0
output = 2.5
"#
        );
        assert_eq!(toml::from_str::<PricingConfig>(&printed).unwrap(), cfg);
        // Into a TOML table (how the config's defaults type `SWITCHYARD_*` variables): the same
        // names, floats.
        let table = toml::Table::try_from(&cfg).unwrap();
        assert_eq!(
            toml::Value::Table(table).to_string(),
            toml::Value::Table(toml::from_str(&printed).unwrap()).to_string()
        );

        // Refused, in these words.
        let refused = |text: &str| toml::from_str::<PricingConfig>(text).unwrap_err();
        let message = |text: &str| refused(text).message().to_owned();
        assert_eq!(
            message("[models.m]\ninput = 1\noutput = 1\nsurcharge = 1\n"),
            "unknown field `surcharge`, expected one of `input`, `output`, `cache_write_5m`, \
             `cache_write_1h`, `cache_read`, `above_200k`, `web_search_per_1k`"
        );
        assert_eq!(
            message(
                "[models.m]\ninput = 1\noutput = 1\n[models.m.above_200k]\ninput = 1\noutput = 1\nweb_search_per_1k = 1\n"
            ),
            "unknown field `web_search_per_1k`, expected one of `input`, `output`, \
             `cache_write_5m`, `cache_write_1h`, `cache_read`"
        );
        assert_eq!(message("[models.m]\ninput = 1\n"), "missing field `output`");
        assert_eq!(
            message("[models.m]\ninput = \"3\"\noutput = 1\n"),
            "invalid type: string \"3\", expected f64"
        );
        assert_eq!(
            message("[models.m]\ninput = 1\noutput = 1\nabove_200k = 2\n"),
            "invalid type: integer `2`, expected struct UsdTokenPrices"
        );
        // Where: the span the error shows.
        assert_eq!(
            refused("[models.m]\ninput = 1\noutput = 1\nsurcharge = 1\n").span(),
            Some(32..41)
        );
        assert_eq!(
            refused("[models.m]\ninput = \"3\"\noutput = 1\n").span(),
            Some(19..22)
        );
        assert_eq!(refused("[models.m]\ninput = 1\n").span(), Some(0..10));
        // The price file, likewise.
        let err = PriceTable::from_toml_str("[models.m]\ninput = 1\noutput = 1\ncache_reads = 1\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown field `cache_reads`, expected one of `input`"),
            "{err}"
        );
    }

    #[test]
    fn vendor_spellings_resolve() {
        let t = PriceTable::builtin().unwrap();
        assert_eq!(t.price("claude-sonnet-4-5@20250929"), Some(&SONNET_1M));
        assert_eq!(
            t.price("us.anthropic.claude-sonnet-4-5-20250929-v1:0"),
            Some(&SONNET_1M)
        );
        assert_eq!(
            t.price("global.anthropic.claude-opus-4-5-20251101-v1:0"),
            Some(&OPUS_4_5)
        );
        assert_eq!(
            t.price("anthropic.claude-haiku-4-5-20251001-v1:0"),
            Some(&HAIKU_4_5)
        );
    }

    #[test]
    fn normalise_model_strips_decorations() {
        assert_eq!(
            normalise_model("claude-sonnet-4-5-20250929"),
            "claude-sonnet-4-5"
        );
        assert_eq!(
            normalise_model("claude-sonnet-4-5@20250929"),
            "claude-sonnet-4-5"
        );
        assert_eq!(
            normalise_model("eu.anthropic.claude-3-haiku-20240307-v1:0"),
            "claude-3-haiku"
        );
        assert_eq!(normalise_model("claude-opus-4-8"), "claude-opus-4-8");
        assert_eq!(
            normalise_model("claude-3-5-sonnet-v2@20241022"),
            "claude-3-5-sonnet-v2"
        );
        assert_eq!(normalise_model("deepseek-v3"), "deepseek-v3");
        assert_eq!(normalise_model("x-v1:a"), "x-v1:a");
        // Not a date: too short, or not digits.
        assert_eq!(normalise_model("model-1234567"), "model-1234567");
        assert_eq!(normalise_model("claude-x-2025092a"), "claude-x-2025092a");
        assert_eq!(normalise_model("-20250101"), "");
        assert_eq!(normalise_model("a-vx"), "a-vx");
        assert_eq!(normalise_model("Mixed.anthropic.x"), "Mixed.anthropic.x");
        assert_eq!(normalise_model(""), "");
        assert_eq!(normalise_model("é-20250101"), "é");
    }

    #[test]
    fn exact_arithmetic() {
        assert_eq!(SONNET.cost_nanousd(&input(1_000_000)), 3_000_000_000);
        let read = TokenUsage {
            cache_read_input_tokens: 1,
            ..TokenUsage::default()
        };
        assert_eq!(SONNET.cost_nanousd(&read), 300);
        // $0.0375/MTok is an exact integer too.
        let p = UsdPrices {
            input: 0.0375,
            output: 0.0,
            cache_write_5m: None,
            cache_write_1h: None,
            cache_read: None,
            above_200k: None,
            web_search_per_1k: None,
        }
        .to_model_price("x")
        .unwrap();
        assert_eq!(p.base.input, 37_500_000);
        assert_eq!(p.cost_nanousd(&input(1_000_000)), 37_500_000);
        // A whole request: 1000 in, 500 out, 2000 read, 100 written on sonnet.
        let u = TokenUsage {
            input_tokens: 1000,
            output_tokens: 500,
            cache_creation_input_tokens: 100,
            cache_read_input_tokens: 2000,
            ..TokenUsage::default()
        };
        // 3000 + 7500 + 375 + 600 micro-dollars = 11_475_000 nanousd.
        assert_eq!(SONNET.cost_nanousd(&u), 11_475_000);
    }

    #[test]
    fn rounds_half_up_once() {
        let p = price(1_500_000, 500_000, 499_999, 0, 0);
        assert_eq!(p.cost_nanousd(&input(1)), 2); // 1.5 → 2
        let out = TokenUsage {
            output_tokens: 1,
            ..TokenUsage::default()
        };
        assert_eq!(p.cost_nanousd(&out), 1); // 0.5 → 1
        let w = TokenUsage {
            cache_creation_input_tokens: 1,
            ..TokenUsage::default()
        };
        assert_eq!(p.cost_nanousd(&w), 0); // 0.499999 → 0
        // Summed before rounding: 0.5 + 0.499999 = 0.999999 → 1, not 1 + 0.
        let both = TokenUsage {
            output_tokens: 1,
            cache_creation_input_tokens: 1,
            ..TokenUsage::default()
        };
        assert_eq!(p.cost_nanousd(&both), 1);
    }

    #[test]
    fn cache_writes_split_by_ttl() {
        let p = price(0, 0, 1_000_000, 1_000_000_000, 0);
        // 1000 writes: 300 at 5m, 600 at 1h, 100 unattributed → priced at 5m.
        let u = TokenUsage {
            cache_creation_input_tokens: 1000,
            cache_creation_5m_input_tokens: 300,
            cache_creation_1h_input_tokens: 600,
            ..TokenUsage::default()
        };
        assert_eq!(p.cost_nanousd(&u), 400 + 600_000);
        // On Sonnet: 400 × 3.75 + 600 × 6 micro-dollars.
        assert_eq!(SONNET.cost_nanousd(&u), 1_500_000 + 3_600_000);
        // Unsplit writes are all 5m.
        let unsplit = TokenUsage {
            cache_creation_input_tokens: 1000,
            ..TokenUsage::default()
        };
        assert_eq!(SONNET.cost_nanousd(&unsplit), 3_750_000);
    }

    #[test]
    fn saturates_instead_of_overflowing() {
        let p = price(u64::MAX, u64::MAX, u64::MAX, u64::MAX, u64::MAX);
        let u = TokenUsage {
            input_tokens: u64::MAX,
            output_tokens: u64::MAX,
            cache_read_input_tokens: u64::MAX,
            ..TokenUsage::default()
        };
        assert_eq!(p.cost_nanousd(&u), u64::MAX);
    }

    #[test]
    fn invalid_prices_name_model_and_field() {
        for (value, reason) in [
            ("-1.0", "non-negative"),
            ("nan", "finite"),
            ("inf", "finite"),
            ("1e30", "too large"),
        ] {
            let text = format!(
                "[models.\"claude-test\"]\ninput = 1.0\noutput = 2.0\ncache_read = {value}\n"
            );
            let err = PriceTable::from_toml_str(&text).unwrap_err().to_string();
            assert!(err.contains("claude-test"), "{err}");
            assert!(err.contains("cache_read"), "{err}");
            assert!(err.contains(reason), "{err}");
        }
        let err = PriceTable::from_toml_str("[models.x]\ninput = 1.0\noutput = 1.0\nspeed = 2\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("speed"), "{err}");
        let err = PriceTable::from_toml_str("[models.\"claude-[\"]\ninput = 1.0\noutput = 1.0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("claude-["), "{err}");
    }

    #[test]
    fn missing_cache_prices_use_anthropic_ratios() {
        let t = PriceTable::from_toml_str("[models.m]\ninput = 3.0\noutput = 15.0\n").unwrap();
        assert_eq!(t.price("m"), Some(&SONNET));
    }

    #[test]
    fn most_specific_glob_wins() {
        let t = PriceTable::from_toml_str(
            r#"
            [models."claude-*"]
            input = 1.0
            output = 1.0
            [models."claude-opus-*"]
            input = 2.0
            output = 2.0
            [models."claude-opus-4-5*"]
            input = 3.0
            output = 3.0
            [models."claude-opus-4-5-special"]
            input = 4.0
            output = 4.0
            [models."claude-opus-?-5*"]
            input = 5.0
            output = 5.0
            "#,
        )
        .unwrap();
        let input_price = |m: &str| t.price(m).map(|p| p.base.input / USD);
        assert_eq!(input_price("claude-haiku"), Some(1));
        assert_eq!(input_price("claude-opus-3"), Some(2));
        assert_eq!(input_price("claude-opus-4-5-20251101"), Some(3));
        assert_eq!(input_price("claude-opus-4-5-special"), Some(4));
        // `claude-opus-?-5*` has a shorter literal prefix than `claude-opus-4-5*`, but it is more
        // specific than `claude-opus-*`.
        assert_eq!(input_price("claude-opus-9-5"), Some(5));
        assert_eq!(input_price("gpt-4o"), None);
    }

    #[test]
    fn overlay_lets_the_top_layer_win() {
        let mut base = PriceTable::from_toml_str(
            "[models.\"claude-sonnet-4-5-20250929\"]\ninput = 1.0\noutput = 1.0\n\
             [models.other]\ninput = 7.0\noutput = 7.0\n",
        )
        .unwrap();
        let top = PriceTable::from_toml_str(
            "[models.\"claude-sonnet-4-5\"]\ninput = 2.0\noutput = 2.0\n",
        )
        .unwrap();
        base.overlay(top);
        // The top layer's bare name covers the dated name via normalisation, even though the
        // lower layer lists the dated name exactly.
        assert_eq!(
            base.price("claude-sonnet-4-5-20250929")
                .map(|p| p.base.input),
            Some(2 * USD)
        );
        assert_eq!(base.price("other").map(|p| p.base.input), Some(7 * USD));
        assert_eq!(base.len(), 3);
        base.overlay(PriceTable::default());
        assert_eq!(base.len(), 3);
    }

    const LITELLM_SAMPLE: &str = r#"{
        "sample_spec": {
            "input_cost_per_token": 0.0,
            "output_cost_per_token": 0.0,
            "litellm_provider": "one of https://docs.litellm.ai/docs/providers",
            "max_input_tokens": "max input tokens, if the provider specifies it",
            "mode": "one of: chat, embedding, completion, image_generation"
        },
        "claude-sonnet-4-5": {
            "cache_creation_input_token_cost": 3.75e-06,
            "cache_creation_input_token_cost_above_1hr": 6e-06,
            "cache_creation_input_token_cost_above_200k_tokens": 7.5e-06,
            "cache_creation_input_token_cost_above_1hr_above_200k_tokens": 1.2e-05,
            "cache_read_input_token_cost": 3e-07,
            "cache_read_input_token_cost_above_200k_tokens": 6e-07,
            "input_cost_per_token": 3e-06,
            "input_cost_per_token_above_200k_tokens": 6e-06,
            "litellm_provider": "anthropic",
            "max_input_tokens": 200000,
            "max_output_tokens": 64000,
            "mode": "chat",
            "output_cost_per_token": 1.5e-05,
            "output_cost_per_token_above_200k_tokens": 2.25e-05,
            "supports_prompt_caching": true
        },
        "anthropic/claude-sonnet-4-5": {
            "input_cost_per_token": 9e-06,
            "output_cost_per_token": 9e-06,
            "litellm_provider": "anthropic",
            "mode": "chat"
        },
        "anthropic/claude-3-haiku-20240307": {
            "cache_creation_input_token_cost": 3e-07,
            "cache_read_input_token_cost": 3e-08,
            "input_cost_per_token": 2.5e-07,
            "litellm_provider": "anthropic",
            "mode": "chat",
            "output_cost_per_token": 1.25e-06
        },
        "vertex_ai/claude-opus-4-1": {
            "input_cost_per_token": 1.5e-05,
            "output_cost_per_token": 7.5e-05,
            "litellm_provider": "vertex_ai-anthropic_models",
            "mode": "chat"
        },
        "text-embedding-3-small": {
            "input_cost_per_token": 2e-08,
            "litellm_provider": "openai",
            "mode": "embedding",
            "output_vector_size": 1536
        },
        "dall-e-3": {
            "litellm_provider": "openai",
            "mode": "image_generation",
            "output_cost_per_image": 0.04
        }
    }"#;

    #[test]
    fn imports_litellm_json() {
        let t = PriceTable::from_litellm_json(LITELLM_SAMPLE).unwrap();
        // The `_above_200k_tokens` prices are the long-context ones.
        assert_eq!(t.price("claude-sonnet-4-5"), Some(&SONNET_1M));
        // Dated names reach the bare entry through normalisation.
        assert_eq!(t.price("claude-sonnet-4-5-20250929"), Some(&SONNET_1M));
        // The prefixed twin keeps its own price under its own name, but does not shadow the
        // bare entry.
        assert_eq!(
            t.price("anthropic/claude-sonnet-4-5").map(|p| p.base.input),
            Some(9 * USD)
        );
        // Prefixed-only entries resolve both ways; a missing 1h price falls back to 2 × input.
        let haiku = price(
            250_000_000,
            1_250_000_000,
            300_000_000,
            500_000_000,
            30_000_000,
        );
        assert_eq!(t.price("anthropic/claude-3-haiku-20240307"), Some(&haiku));
        assert_eq!(t.price("claude-3-haiku-20240307"), Some(&haiku));
        // A reseller's prefix is not stripped.
        assert!(t.price("vertex_ai/claude-opus-4-1").is_some());
        assert_eq!(t.price("claude-opus-4-1"), None);
        // Entries without both input and output prices, and the sample, are skipped.
        assert_eq!(t.price("text-embedding-3-small"), None);
        assert_eq!(t.price("dall-e-3"), None);
        assert_eq!(t.price("sample_spec"), None);
        assert_eq!(t.len(), 5);
        // No cache prices at all: Anthropic's ratios.
        assert_eq!(
            t.price("vertex_ai/claude-opus-4-1"),
            Some(&ModelPrice::with_anthropic_cache_ratios(15 * USD, 75 * USD))
        );
        assert_eq!(
            ModelPrice::with_anthropic_cache_ratios(15 * USD, 75 * USD),
            OPUS_4
        );
    }

    /// Every LiteLLM field read, each at a price none of the fallbacks would give, so that a
    /// field read into the wrong price (or not at all) shows.
    #[test]
    fn the_litellm_fields_are_pinned() {
        let t = PriceTable::from_litellm_json(
            r#"{"m": {
                "input_cost_per_token": 1e-06,
                "output_cost_per_token": 2e-06,
                "cache_creation_input_token_cost": 3e-06,
                "cache_creation_input_token_cost_above_1hr": 4e-06,
                "cache_read_input_token_cost": 5e-06,
                "input_cost_per_token_above_200k_tokens": 6e-06,
                "output_cost_per_token_above_200k_tokens": 7e-06,
                "cache_creation_input_token_cost_above_200k_tokens": 8e-06,
                "cache_creation_input_token_cost_above_1hr_above_200k_tokens": 9e-06,
                "cache_read_input_token_cost_above_200k_tokens": 1.1e-05
            }}"#,
        )
        .unwrap();
        let p = t.price("m").unwrap();
        assert_eq!(
            p.token_prices(&input(1)),
            TokenPrices {
                input: USD,
                output: 2 * USD,
                cache_write_5m: 3 * USD,
                cache_write_1h: 4 * USD,
                cache_read: 5 * USD,
            }
        );
        assert_eq!(
            p.token_prices(&input(LONG_CONTEXT_THRESHOLD + 1)),
            TokenPrices {
                input: 6 * USD,
                output: 7 * USD,
                cache_write_5m: 8 * USD,
                cache_write_1h: 9 * USD,
                cache_read: 11 * USD,
            }
        );
        assert_eq!(p.web_search, DEFAULT_WEB_SEARCH);
    }

    #[test]
    fn litellm_long_context_prices_fill_in_what_is_missing() {
        let t = PriceTable::from_litellm_json(
            r#"{
                "gemini-2.5-pro": {"input_cost_per_token": 1.25e-06, "output_cost_per_token": 1e-05,
                    "cache_read_input_token_cost": 1.25e-07,
                    "input_cost_per_token_above_200k_tokens": 2.5e-06,
                    "output_cost_per_token_above_200k_tokens": 1.5e-05},
                "input-only": {"input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06,
                    "input_cost_per_token_above_200k_tokens": 3e-06},
                "flat": {"input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06,
                    "input_cost_per_token_above_128k_tokens": 3e-06}
            }"#,
        )
        .unwrap();
        // Cache prices not given for the long context: Anthropic's ratios of its input.
        assert_eq!(
            t.price("gemini-2.5-pro").and_then(|p| p.above_200k),
            Some(TokenPrices::with_anthropic_cache_ratios(
                2_500_000_000,
                15 * USD
            ))
        );
        // An output price not given for the long context: the base one.
        assert_eq!(
            t.price("input-only").and_then(|p| p.above_200k),
            Some(TokenPrices::with_anthropic_cache_ratios(3 * USD, 2 * USD))
        );
        // Other tiers are not read.
        assert_eq!(t.price("flat").and_then(|p| p.above_200k), None);
        let err = PriceTable::from_litellm_json(
            r#"{"m": {"input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06,
                "output_cost_per_token_above_200k_tokens": -1}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("output_cost_per_token_above_200k_tokens"),
            "{err}"
        );
    }

    #[test]
    fn litellm_errors() {
        assert!(matches!(
            PriceTable::from_litellm_json("[1, 2]"),
            Err(PricingError::LiteLlmShape)
        ));
        assert!(matches!(
            PriceTable::from_litellm_json("{"),
            Err(PricingError::Json(_))
        ));
        let err = PriceTable::from_litellm_json(
            r#"{"m": {"input_cost_per_token": -1e-06, "output_cost_per_token": 1e-06}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("`m`") && err.contains("input_cost_per_token"),
            "{err}"
        );
    }

    #[test]
    fn config_layers_and_default() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("prices.json");
        std::fs::write(
            &file,
            r#"{"claude-opus-4-8": {"input_cost_per_token": 2e-06, "output_cost_per_token": 4e-06},
                "claude-haiku-4-5": {"input_cost_per_token": 7e-06, "output_cost_per_token": 7e-06},
                "my-model": {"input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06}}"#,
        )
        .unwrap();
        let imported = PriceTable::from_litellm_json(
            r#"{"my-model": {"input_cost_per_token": 5e-06, "output_cost_per_token": 5e-06},
                "imported-only": {"input_cost_per_token": 8e-06, "output_cost_per_token": 8e-06}}"#,
        )
        .unwrap();
        let cfg: PricingConfig = toml::from_str(&format!(
            r#"
            file = {file:?}
            [default]
            input = 10.0
            output = 20.0
            [models."claude-haiku-4-5*"]
            input = 0.5
            output = 0.5
            "#
        ))
        .unwrap();
        let pricing = Pricing::from_config(&cfg, Some(imported)).unwrap();
        let input_price = |m: &str| pricing.price(m).0.base.input;
        assert_eq!(input_price("claude-sonnet-4-5"), 3 * USD); // builtin
        assert_eq!(input_price("imported-only"), 8 * USD); // imported
        assert_eq!(input_price("my-model"), USD); // file beats imported
        assert_eq!(input_price("claude-opus-4-8"), 2 * USD); // file beats builtin
        assert_eq!(input_price("claude-haiku-4-5-20251001"), USD / 2); // config beats file
        let cost = pricing.cost("mystery", &input(1_000_000));
        assert_eq!(
            cost,
            Cost {
                nanousd: 10 * USD,
                known_model: false
            }
        );
        let cost = pricing.cost("claude-sonnet-4-5", &input(100_000));
        assert_eq!(
            cost,
            Cost {
                nanousd: 300_000_000,
                known_model: true
            }
        );
    }

    #[test]
    fn config_defaults_and_errors() {
        let cfg: PricingConfig = toml::from_str("").unwrap();
        assert_eq!(cfg, PricingConfig::default());
        let pricing = Pricing::from_config(&cfg, None).unwrap();
        assert_eq!(pricing.default_price(), &SONNET);
        assert_eq!(pricing.cost("claude-opus-4-8", &input(1)).nanousd, 5000);
        // Round-trips through TOML (the config is printed by `switchyard config`).
        let text = toml::to_string(&cfg).unwrap();
        assert_eq!(toml::from_str::<PricingConfig>(&text).unwrap(), cfg);

        assert!(toml::from_str::<PricingConfig>("surcharge = 1").is_err());

        let cfg = PricingConfig {
            file: Some(PathBuf::from("/nonexistent/prices.json")),
            ..PricingConfig::default()
        };
        let err = Pricing::from_config(&cfg, None).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/prices.json"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.json");
        std::fs::write(&file, "not json").unwrap();
        let cfg = PricingConfig {
            file: Some(file.clone()),
            ..PricingConfig::default()
        };
        let err = Pricing::from_config(&cfg, None).unwrap_err().to_string();
        assert!(err.contains(&file.display().to_string()), "{err}");

        let mut cfg = PricingConfig::default();
        cfg.default.output = -1.0;
        let err = Pricing::from_config(&cfg, None).unwrap_err().to_string();
        assert!(
            err.contains("pricing.default") && err.contains("output"),
            "{err}"
        );
    }

    // Up to 10^11 tokens per kind at up to $1000/MTok stays far from saturation (u64::MAX is
    // about 1.8 × 10^19 nanousd), which `saturates_instead_of_overflowing` covers instead.
    fn usage_strategy() -> impl Strategy<Value = TokenUsage> {
        let n = 0u64..100_000_000_000;
        (
            n.clone(),
            n.clone(),
            n.clone(),
            n.clone(),
            n.clone(),
            n,
            0u64..1_000_000,
        )
            .prop_map(
                |(input, output, w5, w1, extra, read, searches)| TokenUsage {
                    input_tokens: input,
                    output_tokens: output,
                    cache_creation_input_tokens: w5 + w1 + extra,
                    cache_creation_5m_input_tokens: w5,
                    cache_creation_1h_input_tokens: w1,
                    cache_read_input_tokens: read,
                    images: 0,
                    web_search_requests: searches,
                },
            )
    }

    /// Prices the same at every prompt length (a long-context price makes a cost non-additive).
    fn price_strategy() -> impl Strategy<Value = ModelPrice> {
        let p = 0u64..1_000_000_000_000;
        (p.clone(), p.clone(), p.clone(), p.clone(), p.clone(), p).prop_map(
            |(a, b, c, d, e, search)| ModelPrice {
                web_search: search,
                ..price(a, b, c, d, e)
            },
        )
    }

    /// Long-context prices at least the base ones, as every vendor's are.
    fn tiered_price_strategy() -> impl Strategy<Value = ModelPrice> {
        let p = 0u64..1_000_000_000_000;
        (
            price_strategy(),
            p.clone(),
            p.clone(),
            p.clone(),
            p.clone(),
            p,
        )
            .prop_map(|(price, a, b, c, d, e)| ModelPrice {
                above_200k: Some(TokenPrices {
                    input: price.base.input + a,
                    output: price.base.output + b,
                    cache_write_5m: price.base.cache_write_5m + c,
                    cache_write_1h: price.base.cache_write_1h + d,
                    cache_read: price.base.cache_read + e,
                }),
                ..price
            })
    }

    fn add(a: &TokenUsage, b: &TokenUsage) -> TokenUsage {
        TokenUsage {
            input_tokens: a.input_tokens + b.input_tokens,
            output_tokens: a.output_tokens + b.output_tokens,
            cache_creation_input_tokens: a.cache_creation_input_tokens
                + b.cache_creation_input_tokens,
            cache_creation_5m_input_tokens: a.cache_creation_5m_input_tokens
                + b.cache_creation_5m_input_tokens,
            cache_creation_1h_input_tokens: a.cache_creation_1h_input_tokens
                + b.cache_creation_1h_input_tokens,
            cache_read_input_tokens: a.cache_read_input_tokens + b.cache_read_input_tokens,
            images: a.images + b.images,
            web_search_requests: a.web_search_requests + b.web_search_requests,
        }
    }

    proptest! {
        #[test]
        fn cost_is_additive_within_rounding(
            p in price_strategy(), a in usage_strategy(), b in usage_strategy()
        ) {
            let separate = u128::from(p.cost_nanousd(&a)) + u128::from(p.cost_nanousd(&b));
            let together = u128::from(p.cost_nanousd(&add(&a, &b)));
            // One rounding per cost: the two separate costs can be off by at most one in total.
            prop_assert!(separate.abs_diff(together) <= 1, "{separate} vs {together}");
        }

        #[test]
        fn cost_is_monotone_in_each_kind(
            p in prop_oneof![price_strategy(), tiered_price_strategy()],
            u in usage_strategy(),
            extra in 0u64..1_000_000_000,
            kind in 0usize..6
        ) {
            let mut more = u;
            match kind {
                0 => more.input_tokens += extra,
                1 => more.output_tokens += extra,
                2 => {
                    more.cache_creation_5m_input_tokens += extra;
                    more.cache_creation_input_tokens += extra;
                }
                3 => {
                    more.cache_creation_1h_input_tokens += extra;
                    more.cache_creation_input_tokens += extra;
                }
                4 => more.cache_read_input_tokens += extra,
                _ => more.web_search_requests += extra,
            }
            prop_assert!(p.cost_nanousd(&more) >= p.cost_nanousd(&u));
        }

        #[test]
        fn unsplit_writes_cost_like_5m_writes(p in price_strategy(), n in 0u64..100_000_000_000) {
            let unsplit = TokenUsage { cache_creation_input_tokens: n, ..TokenUsage::default() };
            let split = TokenUsage { cache_creation_5m_input_tokens: n, ..unsplit };
            prop_assert_eq!(p.cost_nanousd(&unsplit), p.cost_nanousd(&split));
        }
    }
}
