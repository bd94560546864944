use super::*;

fn query(u: &str, frame_max: Option<u32>) -> (Option<u16>, Option<u32>) {
    let uri = with_defaults(u.parse().expect("a valid URL"), 5, frame_max);
    (uri.query.heartbeat, uri.query.frame_max)
}

#[test]
fn heartbeat_and_frame_size_are_asked_for_unless_the_url_names_them() {
    let url = "amqp://localhost/%2f";
    assert_eq!(
        query(url, Some(SMALL_FRAMES)),
        (Some(5), Some(SMALL_FRAMES))
    );
    assert_eq!(query(url, None), (Some(5), None));
    let named = "amqp://localhost/%2f?frame_max=65536&heartbeat=30";
    assert_eq!(query(named, Some(SMALL_FRAMES)), (Some(30), Some(65536)));
}

#[test]
fn a_list_names_every_node_once_in_some_order() {
    let list = " amqp://a:5672/%2f, amqp://b:5672/%2f ,,amqp://c:5672/%2f";
    let mut nodes = nodes(list).expect("three nodes");
    nodes.sort();
    assert_eq!(
        nodes,
        [
            "amqp://a:5672/%2f",
            "amqp://b:5672/%2f",
            "amqp://c:5672/%2f"
        ]
    );
    assert_eq!(
        super::nodes(DEFAULT_AMQP_URL).expect("one"),
        [DEFAULT_AMQP_URL]
    );
}

#[test]
fn the_order_differs_between_processes() {
    let list: Vec<String> = (0..8).map(|i| format!("amqp://n{i}:5672/%2f")).collect();
    let list = list.join(",");
    let first = nodes(&list).expect("eight nodes");
    // 8! orders: a hundred shuffles that all agree would be a broken shuffle.
    assert!((0..100).any(|_| nodes(&list).expect("eight nodes") != first));
}

#[test]
fn a_bad_list_is_refused_without_quoting_it() {
    assert_eq!(nodes(""), Err(NodesError::Empty));
    assert_eq!(nodes(" , ,"), Err(NodesError::Empty));
    let secret = "amqp://guest:s3cret@a:5672/%2f,http://guest:s3cret@b/";
    let refused = nodes(secret).expect_err("not AMQP");
    assert_eq!(refused, NodesError::Malformed(2));
    assert!(!refused.to_string().contains("s3cret"), "{refused}");
    let many = vec!["amqp://a:5672/%2f"; MAX_NODES + 1].join(",");
    assert_eq!(nodes(&many), Err(NodesError::TooMany));
}

#[test]
fn an_address_never_carries_credentials() {
    assert_eq!(
        address("amqp://guest:s3cret@10.0.0.7:5682/%2f"),
        "10.0.0.7:5682"
    );
    assert_eq!(address("amqp://10.0.0.7/%2f"), "10.0.0.7:5672");
    assert!(!address("nonsense://s3cret").contains("s3cret"));
}

#[test]
fn loopback_means_every_node() {
    let broker = |list: &str| Broker::new(list).expect("valid");
    assert!(
        broker("amqp://localhost/%2f,amqp://127.0.0.2:5682/%2f,amqp://[::1]/%2f").is_loopback()
    );
    assert!(!broker("amqp://127.0.0.1/%2f,amqp://mq.internal/%2f").is_loopback());
}

/// Accepts connections, then says nothing: a paused broker.
async fn silent_node() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            open.push(socket);
        }
    });
    (format!("amqp://guest:guest@{addr}/%2f"), held)
}

/// A port nobody listens on: a dead broker.
async fn dead_node() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("amqp://guest:guest@{addr}/%2f")
}

#[tokio::test]
async fn nodes_that_never_answer_or_are_gone_are_given_up_on() {
    let (silent, held) = silent_node().await;
    let broker = Broker {
        nodes: vec![silent, dead_node().await],
        heartbeat: 5,
        timeout: Duration::from_millis(200),
    };
    let mut connector = broker.connector();
    let result = tokio::time::timeout(Duration::from_secs(5), connector.connect("test", None))
        .await
        .expect("gave up by itself");
    // The last node tried, the dead one, gives the error.
    assert!(
        matches!(result, Err(AmqpError::Lapin(_))),
        "{:?}",
        result.err()
    );
    held.abort();
}

/// Forwards every connection to `target`: a second node that answers.
async fn relay_node(target: String) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let relay = tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let target = target.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (format!("amqp://guest:guest@{addr}/%2f"), relay)
}

#[tokio::test]
async fn a_silent_node_costs_the_attempt_delay_not_the_timeout() {
    let url = std::env::var("AMQP_URL").unwrap_or_else(|_| DEFAULT_AMQP_URL.to_owned());
    let url = url.split(',').next().unwrap_or_default().trim().to_owned();
    let (relay, forwarding) = relay_node(address(&url)).await;
    let (silent, held) = silent_node().await;
    let broker = Broker {
        nodes: vec![silent, relay.clone()],
        heartbeat: 5,
        timeout: Duration::from_secs(30),
    };
    let mut connector = broker.connector();
    let mut connect = async || {
        let started = std::time::Instant::now();
        let connected = connector
            .connect("test", None)
            .await
            .expect("a node answers");
        (connected.node.clone(), started.elapsed())
    };
    let (node, took) = connect().await;
    assert_eq!(node, address(&relay));
    // Well under the timeout: the relay was tried after the attempt delay.
    assert!(took < Duration::from_secs(10), "{took:?}");
    // The next connection starts after the node that answered: at the silent one again.
    let (node, took) = connect().await;
    assert_eq!(node, address(&relay));
    assert!(took >= ATTEMPT_DELAY, "{took:?}");
    forwarding.abort();
    held.abort();
}

/// A connection given up with a channel made through it closes cleanly: lapin's state ends
/// `closed`, not `errored` (which it logs as "Connection error"). The channel's own close,
/// sent when its last handle was dropped, raced the connection's and lost half the time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_given_up_closes_with_its_channels_without_an_error() {
    let url = std::env::var("AMQP_URL").unwrap_or_else(|_| DEFAULT_AMQP_URL.to_owned());
    let broker = Broker::new(&url).expect("valid");
    let mut connector = broker.connector();
    let mut given_up = Vec::new();
    for _ in 0..20 {
        let conn = connector.connect("given up", None).await.expect("a node");
        let channel = conn.create_channel().await.expect("a channel");
        given_up.push(conn.status().clone());
        drop(channel);
        drop(conn);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !given_up.iter().all(|s| s.closed() || s.errored()) {
        assert!(
            std::time::Instant::now() < deadline,
            "connections still open"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let errored = given_up.iter().filter(|s| s.errored()).count();
    assert_eq!(errored, 0, "{errored} of 20 connections ended in an error");
}
