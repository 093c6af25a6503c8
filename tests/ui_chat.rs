//! The chat demo page in a real headless Chromium, in two browser
//! contexts (as two people would use it): both join, the gateway is
//! killed and started again on the same ports, both pages reconnect with
//! no click, what was typed meanwhile is sent then, and a message crosses
//! with its sender's name and time. Leaving reads as leaving, a too-long
//! room name is refused before connecting, a blank message is not sent,
//! and no request was answered 404 (the favicon is inline).

#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a failed unwrap is a failed test

mod support;

use support::browser::{Browser, Page};
use support::standalone::{Ports, Standalone};

const STATE: &str = r#"document.getElementById("state").textContent"#;

async fn connected(page: &Page<'_>, who: &str) {
    page.wait_for(
        &format!("{who} connected"),
        &format!("{STATE}.startsWith(\"connected\")"),
    )
    .await;
}

/// Types `text` into the message box and submits the form (Enter).
async fn say(page: &Page<'_>, text: &str) {
    let text = serde_json::to_string(text).unwrap();
    page.eval(&format!(
        "document.getElementById('text').value = {text}; \
         document.getElementById('form').requestSubmit(); true"
    ))
    .await;
}

/// The text of the first chat message line containing `needle`.
fn message_with(needle: &str) -> String {
    let needle = serde_json::to_string(needle).unwrap();
    format!(
        "[...document.querySelectorAll('#log .msg')].map(d => d.innerText)\
         .find(t => t.includes({needle})) || null"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_pages_reconnect_after_a_restart_and_messages_cross() {
    let ports = Ports::free();
    let gateway = Standalone::start(ports).await;
    let url = format!("http://{}/chat/http/", gateway.http);
    let browser = Browser::launch().await;
    let (one, two) = (browser.context().await, browser.context().await);
    let alice = browser.open(&url, Some(&one)).await;
    let bob = browser.open(&url, Some(&two)).await;
    connected(&alice, "alice").await;
    connected(&bob, "bob").await;
    alice
        .eval("document.getElementById('name').value = 'alice'")
        .await;
    say(&alice, "hello before").await;
    bob.wait_for("the first message at bob", &message_with("hello before"))
        .await;

    // The gateway dies: both pages say so.
    gateway.kill().await;
    for (page, who) in [(&alice, "alice"), (&bob, "bob")] {
        page.wait_for(
            &format!("{who} showing the disconnection"),
            &format!("{STATE}.includes(\"reconnecting\")"),
        )
        .await;
    }
    // Typed while down: kept and shown as not sent.
    say(&alice, "typed while down").await;
    let pending = alice
        .eval("document.querySelector('#log .pending')?.innerText")
        .await;
    assert!(
        pending.as_str().unwrap_or("").contains("not sent yet"),
        "{pending}"
    );

    // Back on the same ports; no click anywhere.
    let again = Standalone::start(ports).await;
    connected(&alice, "alice after the restart").await;
    connected(&bob, "bob after the restart").await;
    let queued = alice
        .wait_for(
            "the queued message sent after the reconnect",
            &format!(
                "!document.querySelector('#log .pending') && {}",
                message_with("typed while down")
            ),
        )
        .await;
    assert!(queued.as_str().unwrap().contains("alice: "), "{queued}");

    say(&alice, "after the restart").await;
    let crossed = bob
        .wait_for(
            "alice's message at bob after the reconnect",
            &message_with("after the restart"),
        )
        .await;
    // Sender and time: "HH:MM:SS alice: after the restart" (a locale's
    // time has digits and colons).
    let crossed = crossed.as_str().unwrap();
    assert!(crossed.contains("alice: after the restart"), "{crossed}");
    assert!(
        crossed.split("alice:").next().unwrap().contains(':'),
        "{crossed}"
    );

    // A blank message is not sent (nothing is queued for it).
    say(&alice, "   ").await;
    let notice = alice
        .eval("[document.getElementById('notice').textContent, document.querySelectorAll('#log .pending').length]")
        .await;
    assert_eq!(notice, serde_json::json!(["nothing to send", 0]));

    // A name too long for a room is refused before connecting.
    let long = "r".repeat(65);
    let refused = bob
        .eval(&format!(
            "document.getElementById('room').value = '{long}'; \
             document.getElementById('join').click(); \
             [document.getElementById('notice').textContent, {STATE}]"
        ))
        .await;
    assert!(
        refused[0].as_str().unwrap().contains("too long"),
        "{refused}"
    );
    assert!(
        refused[1].as_str().unwrap().starts_with("connected"),
        "bob stays where he was: {refused}"
    );

    // Leaving reads as leaving, not as an error code.
    bob.eval("document.getElementById('leave').click()").await;
    let log = bob
        .wait_for(
            "bob's log saying he left",
            "(t => t.includes('left room lobby') ? t : null)(document.getElementById('log').innerText)",
        )
        .await;
    assert!(!log.as_str().unwrap().contains("closed:"), "{log}");
    assert_eq!(bob.eval(STATE).await, "not in a room");

    assert_eq!(browser.responses_with_status(404), Vec::<String>::new());
    drop(again);
}
