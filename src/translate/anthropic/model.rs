//! What a translation must know of a Claude model and only its name tells: which request
//! fields it takes, and how long an answer it can give.
//!
//! Names come in two forms: `claude-<family>-<major>[-<minor>][-<date>]` since Claude 4
//! (`claude-opus-4-7`, `claude-sonnet-4-5-20250929`, `claude-sonnet-5`) and
//! `claude-<major>[-<minor>]-<family>[-<date>]` before (`claude-3-5-haiku-latest`); Vertex
//! writes the date after an `@`. A name read neither way is a model the relay knows nothing
//! of: the request goes as the client sent it.

/// A Claude model as its name describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claude<'a> {
    pub family: &'a str,
    /// `(major, minor)`: `claude-opus-4-7` is `(4, 7)`, `claude-sonnet-5` `(5, 0)`.
    pub version: (u32, u32),
}

/// Answers longer than this are not asked for without streaming: Anthropic's SDKs refuse a
/// non-streamed request expected to run past ten minutes (an hour per 128,000 tokens), the
/// time `upstream.answer_timeout_secs` also allows by default.
pub const NON_STREAMING_MAX_TOKENS: u32 = 21_333;

impl<'a> Claude<'a> {
    pub fn of(model: &'a str) -> Option<Claude<'a>> {
        let name = model.split('@').next()?.strip_prefix("claude-")?;
        let mut parts = name.split('-');
        let first = parts.next()?;
        let (family, major) = match number(first) {
            // The older form: the version first, then the family.
            Some(major) => {
                let next = parts.next()?;
                match number(next) {
                    Some(minor) => return Some(Claude::new(parts.next()?, (major, minor))),
                    None => (next, major),
                }
            }
            None => (first, number(parts.next()?)?),
        };
        let minor = parts.next().and_then(number).unwrap_or(0);
        Some(Claude::new(family, (major, minor)))
    }

    fn new(family: &'a str, version: (u32, u32)) -> Claude<'a> {
        Claude { family, version }
    }

    /// Whether it takes `temperature` and `top_p`: Claude Opus 4.7 and every model after
    /// answer 400 ("`temperature` is deprecated for this model") to any value.
    pub fn takes_sampling(self) -> bool {
        self.version < (4, 7)
    }

    /// The most output tokens it gives (Anthropic's model overview; a later model at least
    /// what the latest known one gives).
    pub fn max_output(self) -> u32 {
        match self.version {
            v if v < (3, 5) => 4_096,
            v if v < (3, 7) => 8_192,
            v if v < (4, 0) => 64_000,
            v if v < (4, 5) && self.family == "opus" => 32_000,
            _ => 64_000,
        }
    }

    /// Whether it takes `output_config.format` (structured JSON outputs, generally available
    /// from the 4.5 models on; Opus 4.1 had them only as a beta, under another field).
    pub fn takes_output_format(self) -> bool {
        self.version >= (4, 5)
    }

    /// How it thinks when asked to: not at all before Claude 3.7; within a token budget
    /// (`thinking.budget_tokens`) up to 4.5; adaptively, steered by `output_config.effort`,
    /// from 4.6 on (Opus 4.7 and later refuse a budget).
    pub fn thinking(self) -> Option<Thinking> {
        match self.version {
            v if v < (3, 7) => None,
            v if v < (4, 6) => Some(Thinking::Budget),
            _ => Some(Thinking::Adaptive),
        }
    }

    /// Whether it sends its thinking empty unless asked for a summary (`display: "summarized"`):
    /// Opus 4.7 and later.
    pub fn omits_thinking_by_default(self) -> bool {
        self.family == "opus" && self.version >= (4, 7)
    }

    /// Whether it takes the `xhigh` effort (Opus 4.7 and later; the others take up to `high`).
    pub fn takes_xhigh_effort(self) -> bool {
        self.family == "opus" && self.version >= (4, 7)
    }
}

/// How a model is asked to think.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Thinking {
    /// `{"type": "enabled", "budget_tokens": n}`.
    Budget,
    /// `{"type": "adaptive"}`, with `output_config.effort`.
    Adaptive,
}

/// A version number: one or two digits (a date has eight).
fn number(part: &str) -> Option<u32> {
    let digits = (1..=2).contains(&part.len()) && part.bytes().all(|b| b.is_ascii_digit());
    digits.then(|| part.parse().ok()).flatten()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_of_every_form_are_read() {
        let read = |m| Claude::of(m).map(|c| (c.family, c.version));
        assert_eq!(read("claude-opus-4-7"), Some(("opus", (4, 7))));
        assert_eq!(read("claude-sonnet-4-5-20250929"), Some(("sonnet", (4, 5))));
        assert_eq!(read("claude-sonnet-4-20250514"), Some(("sonnet", (4, 0))));
        assert_eq!(read("claude-opus-4-1@20250805"), Some(("opus", (4, 1))));
        assert_eq!(read("claude-sonnet-5"), Some(("sonnet", (5, 0))));
        assert_eq!(read("claude-3-5-haiku-latest"), Some(("haiku", (3, 5))));
        assert_eq!(read("claude-3-7-sonnet-20250219"), Some(("sonnet", (3, 7))));
        assert_eq!(read("claude-3-haiku-20240307"), Some(("haiku", (3, 0))));
        for unknown in [
            "gpt-4o",
            "claude",
            "claude-",
            "claude-instant",
            "claude-x-y",
            "",
        ] {
            assert_eq!(read(unknown), None, "{unknown}");
        }
    }

    #[test]
    fn what_each_generation_takes_and_gives() {
        let claude = |m| Claude::of(m).unwrap();
        assert!(claude("claude-opus-4-6").takes_sampling());
        assert!(claude("claude-3-5-sonnet-20241022").takes_sampling());
        for newer in [
            "claude-opus-4-7",
            "claude-opus-4-8",
            "claude-sonnet-5",
            "claude-opus-5-1",
        ] {
            assert!(!claude(newer).takes_sampling(), "{newer}");
        }
        let max = |m| claude(m).max_output();
        assert_eq!(max("claude-3-haiku-20240307"), 4_096);
        assert_eq!(max("claude-3-5-haiku-latest"), 8_192);
        assert_eq!(max("claude-3-7-sonnet-latest"), 64_000);
        assert_eq!(max("claude-opus-4-1"), 32_000);
        assert_eq!(max("claude-sonnet-4-0"), 64_000);
        assert_eq!(max("claude-opus-4-5"), 64_000);
        assert_eq!(max("claude-haiku-4-5"), 64_000);
        assert!(!claude("claude-sonnet-4-0").takes_output_format());
        assert!(!claude("claude-opus-4-0").takes_output_format());
        assert!(!claude("claude-opus-4-1").takes_output_format());
        assert!(claude("claude-haiku-4-5").takes_output_format());
        assert!(claude("claude-sonnet-5").takes_output_format());
        let thinks = |m| claude(m).thinking();
        assert_eq!(thinks("claude-3-5-sonnet-20241022"), None);
        assert_eq!(thinks("claude-3-7-sonnet-latest"), Some(Thinking::Budget));
        assert_eq!(thinks("claude-haiku-4-5"), Some(Thinking::Budget));
        assert_eq!(thinks("claude-sonnet-4-6"), Some(Thinking::Adaptive));
        assert_eq!(thinks("claude-opus-4-7"), Some(Thinking::Adaptive));
        assert!(claude("claude-opus-4-7").takes_xhigh_effort());
        assert!(!claude("claude-opus-4-6").takes_xhigh_effort());
        assert!(!claude("claude-sonnet-4-6").takes_xhigh_effort());
    }
}
