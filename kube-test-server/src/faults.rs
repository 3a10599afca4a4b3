//! Fault injection. A [`FaultConfig`] (from `--faults` or the control API)
//! holds rules; every resource request asks [`Faults::decide`] which faults
//! hit it: added latency, a 5xx or 429 instead of the answer, a garbled
//! body, a watch dropped after N events, or a forced 410. Random draws come
//! from one seeded generator, so a sequential test sees the same faults on
//! every run.

use std::sync::Mutex;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Added latency: `100`, `[10, 50]` or `{"min": 10, "max": 50}` milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Latency {
    Fixed(u64),
    Pair([u64; 2]),
    Range { min: u64, max: u64 },
}

/// One fault rule; `verbs`/`resources` empty = every request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verbs: Vec<String>,
    /// plural resource names, e.g. `clusterroles`
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    /// probability of a 5xx with a Status body
    #[serde(default)]
    pub error_rate: f64,
    /// codes to pick from for `error_rate` (default 500 and 503)
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_codes: Vec<u16>,
    /// probability of a 429 with `Retry-After`
    #[serde(default)]
    pub throttle_rate: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<Latency>,
    /// probability of a non-JSON or truncated JSON body (non-watch requests)
    #[serde(default)]
    pub garbage_rate: f64,
    /// close watch streams abruptly after this many events
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_watch_after: Option<u64>,
    /// answer the next K watches / lists with a resourceVersion or continue token with 410
    #[serde(default)]
    pub expire_next: u64,
    /// stop after the rule has injected something this many times
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u64>,
}

/// The whole fault configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(default)]
    pub rules: Vec<FaultRule>,
}

impl FaultConfig {
    /// Accepts `{"seed":..,"rules":[..]}`, a single rule object (optionally
    /// with `seed`), or an array of rules.
    pub fn parse(v: Value) -> Result<Self, serde_json::Error> {
        match v {
            Value::Array(_) => Ok(FaultConfig {
                seed: None,
                rules: serde_json::from_value(v)?,
            }),
            Value::Object(mut m) => {
                if m.contains_key("rules") {
                    return serde_json::from_value(Value::Object(m));
                }
                let seed = m.remove("seed").and_then(|s| s.as_u64());
                if m.is_empty() {
                    return Ok(FaultConfig {
                        seed,
                        rules: vec![],
                    });
                }
                Ok(FaultConfig {
                    seed,
                    rules: vec![serde_json::from_value(Value::Object(m))?],
                })
            }
            other => serde_json::from_value(other),
        }
    }
}

/// The faults chosen for one request.
#[derive(Debug, Default, Clone)]
pub struct Decision {
    pub latency: Duration,
    pub error: Option<u16>,
    pub throttle: Option<u64>,
    pub garbage: bool,
    pub drop_watch_after: Option<u64>,
    pub expire: bool,
}

struct RuleState {
    rule: FaultRule,
    expire_left: u64,
    fired: u64,
}

struct State {
    config: FaultConfig,
    rules: Vec<RuleState>,
    rng: StdRng,
    injected: std::collections::BTreeMap<&'static str, u64>,
}

pub struct Faults {
    default_seed: u64,
    state: Mutex<State>,
}

fn matches(list: &[String], v: &str) -> bool {
    list.is_empty() || list.iter().any(|x| x == "*" || x == v)
}

impl Faults {
    pub fn new(config: FaultConfig, default_seed: u64) -> Self {
        let f = Faults {
            default_seed,
            state: Mutex::new(State {
                config: FaultConfig::default(),
                rules: Vec::new(),
                rng: StdRng::seed_from_u64(default_seed),
                injected: Default::default(),
            }),
        };
        f.set(config);
        f
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the configuration and reseeds the generator.
    pub fn set(&self, config: FaultConfig) {
        let mut s = self.lock();
        s.rng = StdRng::seed_from_u64(config.seed.unwrap_or(self.default_seed));
        s.rules = config
            .rules
            .iter()
            .map(|r| RuleState {
                rule: r.clone(),
                expire_left: r.expire_next,
                fired: 0,
            })
            .collect();
        s.injected.clear();
        s.config = config;
    }

    /// Current configuration, remaining forced expirations and injection counts.
    pub fn describe(&self) -> Value {
        let s = self.lock();
        let remaining: Vec<Value> = s
            .rules
            .iter()
            .map(|r| json!({"expire_left": r.expire_left, "fired": r.fired}))
            .collect();
        json!({
            "config": s.config,
            "rules_state": remaining,
            "injected": s.injected,
        })
    }

    /// Picks the faults for a request. `rv_request` marks watches and lists
    /// that carry a resourceVersion or continue token.
    pub fn decide(&self, verb: &str, resource: &str, rv_request: bool) -> Decision {
        let mut d = Decision::default();
        let mut s = self.lock();
        if s.rules.is_empty() {
            return d;
        }
        let State {
            rules,
            rng,
            injected,
            ..
        } = &mut *s;
        for rs in rules.iter_mut() {
            let r = &rs.rule;
            if !matches(&r.verbs, verb) || !matches(&r.resources, resource) {
                continue;
            }
            if r.times.is_some_and(|t| rs.fired >= t) {
                continue;
            }
            let mut fired = false;
            if let Some(l) = &r.latency_ms {
                let ms = match *l {
                    Latency::Fixed(ms) => ms,
                    Latency::Pair([a, b]) | Latency::Range { min: a, max: b } => {
                        if b > a {
                            rng.random_range(a..=b)
                        } else {
                            a
                        }
                    }
                };
                d.latency = d.latency.saturating_add(Duration::from_millis(ms));
                fired = true;
                *injected.entry("latency").or_default() += 1;
            }
            if rv_request && rs.expire_left > 0 && !d.expire {
                rs.expire_left -= 1;
                d.expire = true;
                fired = true;
                *injected.entry("expire").or_default() += 1;
            }
            if r.error_rate > 0.0 && d.error.is_none() && rng.random::<f64>() < r.error_rate {
                let codes: &[u16] = if r.error_codes.is_empty() {
                    &[500, 503]
                } else {
                    &r.error_codes
                };
                d.error = Some(codes[rng.random_range(0..codes.len())]);
                fired = true;
                *injected.entry("error").or_default() += 1;
            }
            if r.throttle_rate > 0.0
                && d.throttle.is_none()
                && rng.random::<f64>() < r.throttle_rate
            {
                d.throttle = Some(r.retry_after_seconds.unwrap_or(1));
                fired = true;
                *injected.entry("throttle").or_default() += 1;
            }
            if r.garbage_rate > 0.0 && !d.garbage && rng.random::<f64>() < r.garbage_rate {
                d.garbage = true;
                fired = true;
                *injected.entry("garbage").or_default() += 1;
            }
            if verb == "watch"
                && let Some(n) = r.drop_watch_after
            {
                d.drop_watch_after = Some(d.drop_watch_after.map_or(n, |m| m.min(n)));
                fired = true;
                *injected.entry("drop_watch").or_default() += 1;
            }
            if fired {
                rs.fired += 1;
            }
        }
        d
    }

    /// A garbled version of `body`: alternately non-JSON text and the body cut in half.
    pub fn garble(&self, body: &[u8]) -> Vec<u8> {
        let mut s = self.lock();
        if s.rng.random_bool(0.5) || body.len() < 2 {
            b"<html><body>502 Bad Gateway (injected garbage)</body></html>".to_vec()
        } else {
            body[..body.len() / 2].to_vec()
        }
    }
}
