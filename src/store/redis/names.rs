//! Every Redis key name and the pub/sub channel, in one place (documented in docs/redis-keys.md).
//!
//! A name is `<prefix><{tag}><rest>`. Redis Cluster hashes only the part between the first `{`
//! and the next `}`, so every key one script touches is built with the same tag, and the prefix
//! (checked at connect) may not contain braces. Ids that go *inside* a tag are escaped so that
//! they cannot close it early; ids after the tag need no escaping, the rest of the name is theirs.

use crate::store::{Bucket, Dimension};

/// Escapes `%`, `{` and `}`, so that an id inside a tag neither ends it nor makes two names equal.
pub(super) fn escape(part: &str) -> String {
    if !part.contains(['%', '{', '}']) {
        return part.to_owned();
    }
    part.replace('%', "%25")
        .replace('{', "%7B")
        .replace('}', "%7D")
}

/// An id length-prefixed (live.lua's `lp`): `<byte length>:<id>`, so that no id can end where
/// another begins.
pub(super) fn lp(id: &str) -> String {
    let mut out = String::with_capacity(id.len() + 4);
    push_lp(&mut out, id);
    out
}

/// Appends `lp(id)` to `out`.
pub(super) fn push_lp(out: &mut String, id: &str) {
    use std::fmt::Write as _;
    let _ = write!(out, "{}:", id.len());
    out.push_str(id);
}

/// What every field of `live_state` that belongs to a key starts with (live.lua's `kf`).
pub(super) fn key_prefix(key_id: &str) -> String {
    let mut out = String::with_capacity(key_id.len() + 5);
    out.push('k');
    push_lp(&mut out, key_id);
    out
}

/// What every field of `live_state` that belongs to an account starts with (live.lua's `af`).
pub(super) fn account_prefix(account_id: &str) -> String {
    let mut out = String::with_capacity(account_id.len() + 5);
    out.push('a');
    push_lp(&mut out, account_id);
    out
}

/// The field of `live_state` that holds `field` of an account (live.lua's `af`).
pub(super) fn account_field(account_id: &str, field: &str) -> String {
    account_prefix(account_id) + field
}

/// Key names under one installation's prefix.
#[derive(Debug, Clone)]
pub(super) struct Names {
    prefix: String,
}

impl Names {
    pub(super) fn new(prefix: &str) -> Names {
        Names {
            prefix: prefix.to_owned(),
        }
    }

    // --- records: one tag, so that a record, its index and its listing change in one script ---

    /// Hash: key id -> JSON `KeyRecord`.
    pub(super) fn key_records(&self) -> String {
        format!("{}{{rec}}:keys", self.prefix)
    }

    /// Hash: secret hash -> key id.
    pub(super) fn key_hashes(&self) -> String {
        format!("{}{{rec}}:keyhash", self.prefix)
    }

    /// String with a TTL: `Store::claim` of `name` (`oauth:<account id>`).
    pub(super) fn claim(&self, name: &str) -> String {
        format!("{}{{rec}}:claim:{name}", self.prefix)
    }

    /// Hash: account id -> JSON `AccountRecord`.
    pub(super) fn account_records(&self) -> String {
        format!("{}{{rec}}:accounts", self.prefix)
    }

    /// String: the price file last imported (LiteLLM JSON), shared by every instance.
    pub(super) fn imported_prices(&self) -> String {
        format!("{}{{rec}}:prices", self.prefix)
    }

    /// The pub/sub channel of `Change`s. Channels are not keys (no slot), but it carries the
    /// prefix so that installations sharing a Redis do not hear each other.
    pub(super) fn changes_channel(&self) -> String {
        format!("{}changes", self.prefix)
    }

    // --- the live state: one tag, so that one script admits a request and picks its account ---

    /// Hash: every key's and account's live counters, pick order and health (see live.lua).
    pub(super) fn live_state(&self) -> String {
        format!("{}{{live}}:state", self.prefix)
    }

    /// Sorted set: key leases -> deadline (unix ms, the admission's clock).
    pub(super) fn key_leases(&self) -> String {
        format!("{}{{live}}:kl", self.prefix)
    }

    /// Sorted set: account leases -> deadline (unix ms, wall clock).
    pub(super) fn account_leases(&self) -> String {
        format!("{}{{live}}:al", self.prefix)
    }

    /// The three keys every live-state script gets first, in live.lua's order.
    pub(super) fn live(&self) -> Vec<String> {
        vec![self.live_state(), self.key_leases(), self.account_leases()]
    }

    /// Prefix of the strings that mark a key lease swept after its deadline (+ lp(key) lease).
    pub(super) fn swept_prefix(&self) -> String {
        format!("{}{{live}}:swept:", self.prefix)
    }

    /// String: the account a session is bound to, `\n`, when the binding was last written;
    /// expires `scheduler.sticky_ttl_secs` after that.
    pub(super) fn session(&self, session_id: &str) -> String {
        format!("{}{{live}}:sess:{session_id}", self.prefix)
    }

    // --- usage counters: one tag per dimension; its buckets and its marker share it ---

    fn usage_tag(&self, dimension: &Dimension) -> String {
        match dimension {
            Dimension::All => format!("{}{{u:all}}", self.prefix),
            Dimension::Key(id) => format!("{}{{u:key:{}}}", self.prefix, escape(id)),
            Dimension::Account(id) => format!("{}{{u:acct:{}}}", self.prefix, escape(id)),
            Dimension::Model(name) => format!("{}{{u:model:{}}}", self.prefix, escape(name)),
        }
    }

    /// Hash: `Counters` field -> value.
    pub(super) fn usage_counter(&self, dimension: &Dimension, bucket: &Bucket) -> String {
        let tag = self.usage_tag(dimension);
        match bucket {
            Bucket::Hour(h) => format!("{tag}:h:{}", escape(h)),
            Bucket::Day(d) => format!("{tag}:d:{}", escape(d)),
            Bucket::Month(m) => format!("{tag}:m:{}", escape(m)),
            Bucket::Total => format!("{tag}:total"),
        }
    }

    /// String: the batch ids this writer last applied to this dimension (see `usage_add.lua`).
    pub(super) fn usage_applied(&self, dimension: &Dimension, writer: &str) -> String {
        format!("{}:applied:{writer}", self.usage_tag(dimension))
    }

    // --- spend counters: one tag per owner, so that one script adds to all of its periods ---

    /// String with a TTL: what `owner` (an account) spent in the period `bucket` names, in
    /// nano-dollars (`Store::add_spend`).
    pub(super) fn spend(&self, owner: &str, bucket: &str) -> String {
        format!("{}{{spend:{}}}:{bucket}", self.prefix, escape(owner))
    }

    /// String with a TTL of a minute: `charge` was added to `owner`'s spend (`spend_add.lua`).
    pub(super) fn spend_charge(&self, owner: &str, charge: &str) -> String {
        format!("{}{{spend:{}}}:c:{charge}", self.prefix, escape(owner))
    }

    // --- request log: one tag, so that trimming the whole log also trims the per-key indexes ---

    /// Sorted set: `<at>:<request id>` -> at (unix ms).
    pub(super) fn log_all(&self) -> String {
        format!("{}{{log}}:all", self.prefix)
    }

    /// Hash: `<at>:<request id>` -> JSON `RequestLogEntry`.
    pub(super) fn log_entries(&self) -> String {
        format!("{}{{log}}:entries", self.prefix)
    }

    /// What `log_key` puts before the key id; `log_add.lua` builds names of trimmed entries' keys
    /// from it.
    pub(super) fn log_key_prefix(&self) -> String {
        format!("{}{{log}}:key:", self.prefix)
    }

    /// Sorted set like `log_all`, only this key's entries.
    pub(super) fn log_key(&self, key_id: &str) -> String {
        format!("{}{key_id}", self.log_key_prefix())
    }

    /// String: the batch ids this writer last applied to the log.
    pub(super) fn log_applied(&self, writer: &str) -> String {
        format!("{}{{log}}:applied:{writer}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The part of a key name that Redis Cluster hashes.
    fn tag(name: &str) -> &str {
        let Some(open) = name.find('{') else {
            return name;
        };
        match name[open + 1..].find('}') {
            Some(0) | None => name,
            Some(len) => &name[open + 1..open + 1 + len],
        }
    }

    #[test]
    fn live_state_names_length_prefix_ids_in_bytes() {
        assert_eq!(lp("k1"), "2:k1");
        assert_eq!(lp("é"), "2:é");
        assert_eq!(key_prefix("k1"), "k2:k1");
        assert_eq!(account_prefix("acc:9"), "a5:acc:9");
        assert_eq!(account_field("acc:9", "n"), "a5:acc:9n");
        // "1:a" + "2:bc" and "2:1:" + ... can never meet: the length says where an id ends.
        assert_ne!(lp("a") + &lp("bc"), lp("a2:bc"));
    }

    #[test]
    fn ids_cannot_break_out_of_their_tag() {
        let n = Names::new("sy:");
        let odd = Dimension::Key("a}:h:x{".to_owned());
        let counter = n.usage_counter(&odd, &Bucket::Total);
        let marker = n.usage_applied(&odd, "w");
        assert_eq!(tag(&counter), "u:key:a%7D:h:x%7B");
        assert_eq!(tag(&counter), tag(&marker));
        assert_ne!(
            counter,
            n.usage_counter(
                &Dimension::Key("a".to_owned()),
                &Bucket::Hour("x}:total".to_owned())
            )
        );
    }

    #[test]
    fn each_script_s_keys_share_one_tag() {
        let n = Names::new("sy:");
        assert_eq!(tag(&n.key_records()), "rec");
        assert_eq!(tag(&n.key_hashes()), "rec");
        assert_eq!(tag(&n.account_records()), "rec");
        for name in n.live() {
            assert_eq!(tag(&name), "live");
        }
        assert_eq!(tag(&n.swept_prefix()), "live");
        assert_eq!(tag(&n.session("s}{t")), "live");
        assert_eq!(tag(&n.log_all()), "log");
        assert_eq!(tag(&n.log_entries()), "log");
        assert_eq!(tag(&n.log_key("k}{")), "log");
        assert_eq!(tag(&n.log_applied("w")), "log");
        assert_eq!(tag(&n.spend("a}{", "day:2026-11-22")), "spend:a%7D%7B");
        assert_eq!(
            tag(&n.spend("a", "day:1")),
            tag(&n.spend("a", "month:2026-11"))
        );
        let model = Dimension::Model("claude-*".to_owned());
        assert_eq!(
            tag(&n.usage_counter(&model, &Bucket::Day("2026-11-22".to_owned()))),
            "u:model:claude-*"
        );
    }
}
