//! The documented config files parse and validate.

#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a failed unwrap is a failed test

use std::path::Path;

use rpcgate::locator::LocatorConfig;

#[test]
fn locator_example_parses_with_every_key() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/locator.toml");
    let config = LocatorConfig::load(&path).unwrap();
    assert_eq!(config.listen.to_string(), "127.0.0.1:10053");
    assert_eq!(config.admin.unwrap().to_string(), "127.0.0.1:10054");
    assert_eq!(config.services["legacy-echo"].endpoints[0].port, 41234);
    assert_eq!(config.groups["canary"]["echo-v1"], 3);
    assert_eq!(config.groups["canary"]["echo-v2"], 1);
    // The commented-out uuid key is valid too.
    let text = std::fs::read_to_string(&path).unwrap();
    let uncommented = text.replace("# uuid = ", "uuid = ");
    let config = LocatorConfig::parse(&uncommented, &path).unwrap();
    assert!(config.uuid.is_some());
}

#[test]
fn a_bad_file_names_the_file_and_key() {
    let err = LocatorConfig::parse(
        "[groups.g]\nv1 = \"heavy\"",
        Path::new("/etc/rpcgate/locator.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("/etc/rpcgate/locator.toml: "), "{err}");
    assert!(err.contains("v1") || err.contains("groups"), "{err}");
    let missing = LocatorConfig::load(Path::new("/nonexistent/locator.toml")).unwrap_err();
    assert!(
        missing
            .to_string()
            .starts_with("/nonexistent/locator.toml: ")
    );
}
