//! The restart back-off of a container: the first restart at once, then `--backoff-base`
//! (10 s) doubling to 5 min; a container that ran for 10 min starts over.

use super::Ctr;
use std::time::Duration;
use tokio::time::Instant;

/// Maximum restart back-off.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Running this long resets the back-off.
pub(super) const BACKOFF_RESET: Duration = Duration::from_secs(600);

pub(super) fn schedule_restart(c: &mut Ctr, base: f64) {
    c.next_start = Instant::now() + c.backoff;
    c.backoff = if c.backoff.is_zero() {
        Duration::from_secs_f64(base)
    } else {
        (c.backoff * 2).min(MAX_BACKOFF)
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::Ctr;
    use crate::status::{ContainerRun, State};
    use k8s_openapi::api::core::v1::Container;

    #[test]
    fn backoff_doubles_from_immediate_to_the_cap() {
        let mut c = Ctr {
            run: ContainerRun {
                name: "c".into(),
                image: String::new(),
                attempt: 0,
                restart_count: 0,
                state: State::Running {
                    started_at: String::new(),
                },
                last: None,
                ready: false,
                started: false,
            },
            spec: Container::default(),
            pid: None,
            started_any: true,
            next_start: Instant::now(),
            backoff: Duration::ZERO,
            since: None,
            probes: Vec::new(),
            env: Vec::new(),
            retry_config: None,
        };
        let mut waits = Vec::new();
        for _ in 0..8 {
            waits.push(c.backoff.as_secs());
            schedule_restart(&mut c, 10.0);
        }
        assert_eq!(waits, vec![0, 10, 20, 40, 80, 160, 300, 300]);
    }
}
