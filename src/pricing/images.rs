//! Prices of image generation: per image by size and quality (DALL·E, Imagen), and the price of
//! image *input* tokens for token-billed image models (gpt-image-1 bills text input, image input
//! and image output tokens at three prices; the text and output prices are the model's ordinary
//! `input` and `output`).
//!
//! Written in `assets/prices.toml` and the config as `[images."<model or glob>"]`, in USD, and
//! converted to integer nano-USD once, at load, like every other price.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{NANOUSD_PER_USD, PricingError, normalise_model, to_nano};
use crate::catalog::is_glob;

/// Image prices as written: USD.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsdImagePrices {
    /// USD per generated image, keyed `"<size>/<quality>"`, `"<size>"`, `"*/<quality>"` or `"*"`
    /// (tried in that order).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub per_image: BTreeMap<String, f64>,
    /// USD per million image input tokens (edits of token-billed models); unset: the model's
    /// `input` price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_input: Option<f64>,
}

/// Image prices of one model, in nano-USD.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImagePrice {
    /// Per image, by the keys of [`UsdImagePrices::per_image`].
    pub per_image: BTreeMap<String, u64>,
    /// Per million image input tokens.
    pub image_input: Option<u64>,
}

impl ImagePrice {
    fn from_usd(model: &str, usd: &UsdImagePrices) -> Result<ImagePrice, PricingError> {
        let mut per_image = BTreeMap::new();
        for (key, value) in &usd.per_image {
            per_image.insert(
                key.clone(),
                to_nano(*value, NANOUSD_PER_USD, model, "per_image")?,
            );
        }
        let image_input = usd
            .image_input
            .map(|v| to_nano(v, NANOUSD_PER_USD, model, "image_input"))
            .transpose()?;
        Ok(ImagePrice {
            per_image,
            image_input,
        })
    }

    /// The price of one image of `size` and `quality` (either may be unknown).
    pub fn per_image(&self, size: Option<&str>, quality: Option<&str>) -> Option<u64> {
        let mut keys = Vec::with_capacity(4);
        if let Some(size) = size {
            if let Some(quality) = quality {
                keys.push(format!("{size}/{quality}"));
            }
            keys.push(size.to_owned());
        }
        if let Some(quality) = quality {
            keys.push(format!("*/{quality}"));
        }
        keys.push("*".to_owned());
        keys.iter().find_map(|k| self.per_image.get(k).copied())
    }
}

#[derive(Debug, Clone)]
struct Entry {
    key: String,
    pattern: Option<glob::Pattern>,
    literal_prefix: usize,
    price: ImagePrice,
}

/// Model name or glob → image prices, layered like the token price table: a higher layer that
/// matches a model wins; within a layer an exact name beats the most specific glob.
#[derive(Debug, Clone, Default)]
pub struct ImageTable {
    /// Lowest priority first; each layer's entries exact names first, then globs most specific
    /// first.
    layers: Vec<Vec<Entry>>,
}

impl ImageTable {
    pub fn from_usd(models: &BTreeMap<String, UsdImagePrices>) -> Result<ImageTable, PricingError> {
        let mut layer = Vec::with_capacity(models.len());
        for (key, usd) in models {
            let pattern = if is_glob(key) {
                Some(
                    glob::Pattern::new(key).map_err(|source| PricingError::InvalidPattern {
                        model: key.clone(),
                        source,
                    })?,
                )
            } else {
                None
            };
            layer.push(Entry {
                key: key.clone(),
                literal_prefix: key.find(['*', '?', '[']).unwrap_or(key.len()),
                pattern,
                price: ImagePrice::from_usd(key, usd)?,
            });
        }
        layer.sort_by(|a, b| {
            a.pattern
                .is_some()
                .cmp(&b.pattern.is_some())
                .then(b.literal_prefix.cmp(&a.literal_prefix))
                .then(a.key.cmp(&b.key))
        });
        let layers = if layer.is_empty() {
            Vec::new()
        } else {
            vec![layer]
        };
        Ok(ImageTable { layers })
    }

    /// Puts `other` on top.
    pub fn overlay(&mut self, other: ImageTable) {
        self.layers.extend(other.layers);
    }

    /// The image prices of `model`, by exact name, glob, or its normalised name.
    pub fn price(&self, model: &str) -> Option<&ImagePrice> {
        let normalised = normalise_model(model);
        let names = [model, normalised];
        self.layers.iter().rev().find_map(|layer| {
            names.iter().find_map(|name| {
                layer
                    .iter()
                    .find(|e| match &e.pattern {
                        None => e.key == *name,
                        Some(p) => p.matches(name),
                    })
                    .map(|e| &e.price)
            })
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn usd(per_image: &[(&str, f64)], image_input: Option<f64>) -> UsdImagePrices {
        UsdImagePrices {
            per_image: per_image
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            image_input,
        }
    }

    #[test]
    fn size_and_quality_keys_fall_back_in_order() {
        let p = ImagePrice::from_usd(
            "m",
            &usd(
                &[
                    ("1024x1024", 0.04),
                    ("1024x1024/hd", 0.08),
                    ("*/hd", 0.1),
                    ("*", 0.05),
                ],
                None,
            ),
        )
        .unwrap();
        assert_eq!(p.per_image(Some("1024x1024"), Some("hd")), Some(80_000_000));
        assert_eq!(
            p.per_image(Some("1024x1024"), Some("standard")),
            Some(40_000_000)
        );
        assert_eq!(
            p.per_image(Some("1792x1024"), Some("hd")),
            Some(100_000_000)
        );
        assert_eq!(p.per_image(Some("1792x1024"), None), Some(50_000_000));
        assert_eq!(p.per_image(None, None), Some(50_000_000));
        let none = ImagePrice::default();
        assert_eq!(none.per_image(Some("1024x1024"), None), None);
    }

    #[test]
    fn exact_beats_glob_and_higher_layers_win() {
        let mut models = BTreeMap::new();
        models.insert("imagen-4*".to_owned(), usd(&[("*", 0.04)], None));
        models.insert("imagen-4.0-ultra*".to_owned(), usd(&[("*", 0.06)], None));
        models.insert("imagen-4.0-fast".to_owned(), usd(&[("*", 0.02)], None));
        let mut t = ImageTable::from_usd(&models).unwrap();
        let one = |t: &ImageTable, m: &str| t.price(m).and_then(|p| p.per_image(None, None));
        assert_eq!(one(&t, "imagen-4.0-generate-001"), Some(40_000_000));
        assert_eq!(one(&t, "imagen-4.0-ultra-generate-001"), Some(60_000_000));
        assert_eq!(one(&t, "imagen-4.0-fast"), Some(20_000_000));
        assert_eq!(one(&t, "dall-e-3"), None);
        let mut top = BTreeMap::new();
        top.insert("imagen-4*".to_owned(), usd(&[("*", 0.01)], Some(2.5)));
        t.overlay(ImageTable::from_usd(&top).unwrap());
        assert_eq!(one(&t, "imagen-4.0-ultra-generate-001"), Some(10_000_000));
        assert_eq!(
            t.price("imagen-4.0-fast").unwrap().image_input,
            Some(2_500_000_000)
        );
    }

    #[test]
    fn invalid_prices_are_refused_with_the_model() {
        let mut models = BTreeMap::new();
        models.insert("dall-e-3".to_owned(), usd(&[("*", -1.0)], None));
        let err = ImageTable::from_usd(&models).unwrap_err().to_string();
        assert!(
            err.contains("dall-e-3") && err.contains("per_image"),
            "{err}"
        );
    }
}
