use super::*;

fn round_trip<T: PartialEq + std::fmt::Debug>(
    value: &T,
    to_args: impl Fn(&T) -> Args,
    decode: impl Fn(&Bytes) -> Result<T, MsgpackError>,
) {
    assert_eq!(&decode(&to_args(value).to_bytes()).unwrap(), value);
}

fn endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint {
            host: "10.0.0.5".into(),
            port: 41234,
        },
        Endpoint {
            host: "2a02:6b8:0:1::5".into(),
            port: 41234,
        },
    ]
}

#[test]
fn golden_resolve_request() {
    let request = ResolveRequest {
        name: "echo".into(),
        seed: None,
    };
    assert_eq!(request.to_args().to_bytes(), &b"\x91\xa4echo"[..]);
    round_trip(
        &request,
        ResolveRequest::to_args,
        ResolveRequest::decode_args,
    );
    let seeded = ResolveRequest {
        seed: Some("user-42".into()),
        ..request
    };
    round_trip(
        &seeded,
        ResolveRequest::to_args,
        ResolveRequest::decode_args,
    );
}

#[test]
fn every_shape_round_trips() {
    let reply = ResolveReply {
        endpoints: endpoints(),
        version: 1,
        graph: Graph::app(),
    };
    round_trip(&reply, ResolveReply::to_args, ResolveReply::decode_args);
    round_trip(
        &PublishRequest {
            name: "echo".into(),
            endpoints: endpoints(),
            meta: Some((1, Graph::app())),
        },
        PublishRequest::to_args,
        PublishRequest::decode_args,
    );
    round_trip(
        &PublishRequest {
            name: "echo".into(),
            endpoints: endpoints(),
            meta: None,
        },
        PublishRequest::to_args,
        PublishRequest::decode_args,
    );
    round_trip(
        &RoutingRequest {
            router_id: "r-1".into(),
        },
        RoutingRequest::to_args,
        RoutingRequest::decode_args,
    );
    let mut groups = BTreeMap::new();
    groups.insert(
        "myapp".to_owned(),
        vec![
            (10_939_163, "app_v2".to_owned()),
            (u32::MAX, "app_v1".to_owned()),
        ],
    );
    groups.insert("empty".to_owned(), vec![]);
    round_trip(
        &RoutingUpdate { groups },
        RoutingUpdate::to_args,
        RoutingUpdate::decode_args,
    );
    round_trip(
        &RefreshRequest {
            groups: vec!["a".into(), "b".into()],
        },
        RefreshRequest::to_args,
        RefreshRequest::decode_args,
    );
    let mut nodes = BTreeMap::new();
    nodes.insert("uuid-1".to_owned(), endpoints()[0].clone());
    round_trip(
        &ClusterReply { nodes },
        ClusterReply::to_args,
        ClusterReply::decode_args,
    );
    round_trip(
        &UuidArgs {
            uuid: "f81d4fae".into(),
        },
        UuidArgs::to_args,
        UuidArgs::decode_args,
    );
    let mut services = BTreeMap::new();
    services.insert("echo".to_owned(), reply);
    round_trip(
        &ConnectUpdate {
            uuid: "n1".into(),
            services,
        },
        ConnectUpdate::to_args,
        ConnectUpdate::decode_args,
    );
}

#[test]
fn endpoints_parse_to_socket_addrs() {
    let e = endpoints();
    assert_eq!(e[0].socket_addr(), Some("10.0.0.5:41234".parse().unwrap()));
    assert_eq!(
        e[1].socket_addr(),
        Some("[2a02:6b8:0:1::5]:41234".parse().unwrap())
    );
    assert_eq!(
        Endpoint {
            host: "not-an-ip".into(),
            port: 1
        }
        .socket_addr(),
        None
    );
}

#[test]
fn empty_seed_means_random() {
    let bytes = Bytes::from_static(b"\x92\xa4echo\xa0");
    assert_eq!(ResolveRequest::decode_args(&bytes).unwrap().seed, None);
}

#[test]
fn routing_points_accept_u64_forms() {
    // Points written as uint64 by a Rust-framework peer.
    let bytes =
        Bytes::from_static(b"\x91\x81\xa1g\x91\x92\xcf\x00\x00\x00\x00\x00\xa6\xeb\x1b\xa1m");
    let update = RoutingUpdate::decode_args(&bytes).unwrap();
    assert_eq!(update.groups["g"], vec![(10_939_163, "m".to_owned())]);
}
