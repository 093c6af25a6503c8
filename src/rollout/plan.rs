//! The rollout plan: owns the steps (`--steps 10,50,100`) and the weights
//! each step gives the group. Pure: no I/O.
//!
//! A step's share `p` gives the canary `p`% of [`SCALE`] and the other
//! members the rest, each in proportion to its weight from before the
//! rollout (largest remainders, so the total is exact). The locator turns
//! weights into ring points in proportion, so the absolute scale only sets
//! the precision (0.01 percentage points).

use std::collections::BTreeMap;

/// The total weight a step spreads over the group.
pub const SCALE: u32 = 10_000;

/// A group's weights by member.
pub type Weights = BTreeMap<String, u32>;

/// Parses `--steps`: percentages, each above 0, strictly rising, the last
/// exactly 100.
///
/// # Errors
///
/// One line saying what is wrong.
pub fn parse_steps(text: &str) -> Result<Vec<f64>, String> {
    let mut steps = Vec::new();
    for part in text.split(',') {
        let part = part.trim().trim_end_matches('%');
        let share: f64 = part
            .parse()
            .map_err(|_| format!("--steps: `{part}` is not a percentage"))?;
        if !(share > 0.0 && share <= 100.0) {
            return Err(format!("--steps: {share} is not in (0, 100]"));
        }
        if steps.last().is_some_and(|last| share <= *last) {
            return Err(format!(
                "--steps must rise: {share} comes after {}",
                steps.last().copied().unwrap_or(0.0)
            ));
        }
        steps.push(share);
    }
    if steps.last() != Some(&100.0) {
        return Err("--steps must rise to 100 (the last step promotes the canary)".into());
    }
    Ok(steps)
}

/// What the group may be rolled out over: the canary must be a member and
/// another member must hold weight (the baseline).
///
/// # Errors
///
/// One line naming the group and its members.
pub fn check_group(group: &str, weights: &Weights, canary: &str) -> Result<(), String> {
    let members = || weights.keys().cloned().collect::<Vec<_>>().join(", ");
    if !weights.contains_key(canary) {
        return Err(format!(
            "`{canary}` is not a member of group `{group}` (members: {})",
            members()
        ));
    }
    if baseline_total(weights, canary) == 0 {
        return Err(format!(
            "group `{group}` has no member but `{canary}` with weight above 0 to compare against and fall back to (members: {})",
            members()
        ));
    }
    Ok(())
}

fn baseline_total(weights: &Weights, canary: &str) -> u64 {
    weights
        .iter()
        .filter(|(name, _)| name.as_str() != canary)
        .map(|(_, w)| u64::from(*w))
        .sum()
}

/// The weights of a step: the canary holds `share`% of [`SCALE`], the
/// others the rest in proportion to their weights in `before`.
pub fn step_weights(before: &Weights, canary: &str, share: f64) -> Weights {
    let canary_weight = ((share / 100.0) * f64::from(SCALE)).round() as u32;
    let canary_weight = canary_weight.min(SCALE);
    let rest = u64::from(SCALE - canary_weight);
    let total = baseline_total(before, canary).max(1);
    let mut weights = Weights::new();
    let mut remainders = Vec::new();
    let mut given = 0u64;
    for (name, weight) in before.iter().filter(|(n, _)| n.as_str() != canary) {
        let exact = rest * u64::from(*weight);
        let floor = exact / total;
        given += floor;
        remainders.push((exact % total, name.clone()));
        weights.insert(name.clone(), floor as u32);
    }
    // Largest remainders first; ties by name, so the result is stable.
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    for (_, name) in remainders.iter().take((rest - given) as usize) {
        if let Some(weight) = weights.get_mut(name) {
            *weight += 1;
        }
    }
    weights.insert(canary.to_owned(), canary_weight);
    weights
}

/// The weights of a rollback: the canary 0, the others as in `before`.
pub fn rollback_weights(before: &Weights, canary: &str) -> Weights {
    let mut weights = before.clone();
    weights.insert(canary.to_owned(), 0);
    weights
}

/// The members that serve the baseline: every other member with weight in
/// `before`.
pub fn baseline_members(before: &Weights, canary: &str) -> Vec<String> {
    before
        .iter()
        .filter(|(name, weight)| name.as_str() != canary && **weight > 0)
        .map(|(name, _)| name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights(pairs: &[(&str, u32)]) -> Weights {
        pairs.iter().map(|(n, w)| ((*n).to_owned(), *w)).collect()
    }

    #[test]
    fn steps_must_rise_to_100() {
        assert_eq!(parse_steps("10,50,100").unwrap(), vec![10.0, 50.0, 100.0]);
        assert_eq!(parse_steps("0.5, 5%,100").unwrap(), vec![0.5, 5.0, 100.0]);
        assert_eq!(parse_steps("100").unwrap(), vec![100.0]);
        for bad in [
            "10,50",
            "50,10,100",
            "10,10,100",
            "0,100",
            "10,x,100",
            "",
            "10,150",
        ] {
            assert!(parse_steps(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_others_keep_their_relative_weights() {
        let before = weights(&[("a", 3), ("b", 1), ("c", 2), ("canary", 1)]);
        let step = step_weights(&before, "canary", 10.0);
        assert_eq!(step["canary"], 1000);
        assert_eq!(step.values().sum::<u32>(), SCALE);
        assert_eq!(step["a"], 4500);
        assert_eq!(step["b"], 1500);
        assert_eq!(step["c"], 3000);
        let odd = step_weights(
            &weights(&[("a", 1), ("b", 1), ("c", 1), ("v2", 0)]),
            "v2",
            50.0,
        );
        assert_eq!(odd.values().sum::<u32>(), SCALE);
        assert_eq!(
            (odd["a"], odd["b"], odd["c"], odd["v2"]),
            (1667, 1667, 1666, 5000)
        );
        let full = step_weights(&before, "canary", 100.0);
        assert_eq!(full["canary"], SCALE);
        assert!(full.iter().all(|(n, w)| n == "canary" || *w == 0));
    }

    #[test]
    fn a_rollback_restores_the_others_and_zeroes_the_canary() {
        let before = weights(&[("v1", 3), ("v2", 1)]);
        assert_eq!(
            rollback_weights(&before, "v2"),
            weights(&[("v1", 3), ("v2", 0)])
        );
        assert_eq!(baseline_members(&before, "v2"), vec!["v1".to_owned()]);
    }

    #[test]
    fn the_group_must_have_the_canary_and_a_baseline() {
        let before = weights(&[("v1", 3), ("v2", 1)]);
        assert!(check_group("g", &before, "v2").is_ok());
        let error = check_group("g", &before, "v3").unwrap_err();
        assert!(
            error.contains("not a member") && error.contains("v1, v2"),
            "{error}"
        );
        assert!(check_group("g", &weights(&[("v1", 0), ("v2", 1)]), "v2").is_err());
    }
}
