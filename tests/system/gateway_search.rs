//! City-wide search is answered from the availability summaries in Redis
//! (written here directly, as slot-inventory does), without calling any
//! hospital: every hospital in this registry is unreachable.

use jyt_cache::redis;
use jyt_system_tests::{Route, problem, spawn_cards, spawn_gateway_with};
use reqwest::Method;

#[tokio::test]
async fn availability_is_searched_filtered_and_paginated_from_redis_alone() {
    let prefix = jyt_testkit::fresh_redis_prefix();
    let cards = spawn_cards(&prefix).await;
    let dead = "http://127.0.0.1:9";
    let routes = [
        Route {
            id: "pumch",
            base_url: dead,
            district: "dongcheng",
            level: "tertiary",
        },
        Route {
            id: "anzhen",
            base_url: dead,
            district: "chaoyang",
            level: "tertiary",
        },
        Route {
            id: "hepingli",
            base_url: dead,
            district: "dongcheng",
            level: "community",
        },
    ];
    let gateway = spawn_gateway_with(
        &routes,
        &prefix,
        &cards.base_url,
        500,
        &[("SEARCH__PAGE_SIZE", "2")],
    )
    .await;

    let date = "2026-12-01";
    let client = redis::Client::open(jyt_testkit::redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let write = |hospital: &str, avail: Vec<(&str, i64)>, departments: Vec<(&str, &str)>| {
        let mut pipe = redis::pipe();
        let a = format!("{prefix}:{{h:{hospital}}}:avail:{date}");
        let d = format!("{prefix}:{{h:{hospital}}}:departments");
        for (field, n) in avail {
            pipe.hset(&a, field, n).ignore();
        }
        for (id, name) in departments {
            pipe.hset(&d, id, name).ignore();
        }
        pipe
    };
    for pipe in [
        write(
            "pumch",
            vec![
                ("card|expert", 3),
                ("card|general", 0),
                ("derm|general", 12),
                ("rad|mri", 2),
            ],
            vec![("card", "心内科"), ("derm", "皮肤科"), ("rad", "放射科")],
        ),
        write(
            "anzhen",
            vec![("c01|expert", 5), ("c01|special", 1)],
            vec![("c01", "心内科")],
        ),
        write(
            "hepingli",
            vec![("gp|general", 7), ("junk", 1), ("gp|dental", 4)],
            vec![("gp", "全科")],
        ),
    ] {
        pipe.query_async::<()>(&mut conn).await.unwrap();
    }

    let http = reqwest::Client::new();
    let search = |query: String| {
        let req = jyt_system_tests::signed(
            &http,
            &gateway,
            "wechat",
            Method::GET,
            &format!("/v1/availability?{query}"),
            None,
        );
        async move { req.send().await.unwrap() }
    };

    // Cardiology anywhere, by part of the department's name: seats first.
    let res = search(format!("date={date}&department=心内")).await;
    assert_eq!(res.status(), 200);
    let page: serde_json::Value = res.json().await.unwrap();
    assert_eq!(page["total"], 4);
    assert_eq!(page["page_size"], 2);
    let first: Vec<(String, String, i64)> = page["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["hospital_id"].as_str().unwrap().to_owned(),
                r["clinic_level"].as_str().unwrap().to_owned(),
                r["remaining"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        first,
        vec![
            ("anzhen".into(), "expert".into(), 5),
            ("anzhen".into(), "special".into(), 1)
        ]
    );
    assert_eq!(page["results"][0]["department_name"], "心内科");
    assert_eq!(page["results"][0]["district"], "chaoyang");
    let res = search(format!("date={date}&department=心内&page=2")).await;
    let page: serde_json::Value = res.json().await.unwrap();
    let rest: Vec<i64> = page["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["remaining"].as_i64().unwrap())
        .collect();
    assert_eq!(rest, vec![3, 0], "sold-out entries come last");
    let res = search(format!("date={date}&department=心内&page=3")).await;
    let page: serde_json::Value = res.json().await.unwrap();
    assert_eq!(page["results"].as_array().unwrap().len(), 0);

    // Filters: clinic level, district, hospital level, department id.
    let res = search(format!("date={date}&level=mri")).await;
    let page: serde_json::Value = res.json().await.unwrap();
    assert_eq!(page["total"], 1);
    assert_eq!(page["results"][0]["department_name"], "放射科");
    let res = search(format!("date={date}&district=dongcheng&level=general")).await;
    let page: serde_json::Value = res.json().await.unwrap();
    assert_eq!(page["total"], 3, "{page}");
    let res = search(format!("date={date}&hospital_level=community")).await;
    let page: serde_json::Value = res.json().await.unwrap();
    assert_eq!(page["total"], 1, "unknown fields in the hash are skipped: {page}");
    let res = search(format!("date={date}&department=derm")).await;
    let page: serde_json::Value = res.json().await.unwrap();
    assert_eq!(page["results"][0]["remaining"], 12);

    // Another day has nothing.
    let res = search("date=2026-12-02".into()).await;
    let page: serde_json::Value = res.json().await.unwrap();
    assert_eq!(page["total"], 0);

    // Bad queries name the parameter.
    for (query, field) in [
        ("level=xray&date=2026-12-01", "level"),
        ("date=tomorrow", "date"),
        ("date=2026-12-01&page=0", "page"),
        ("date=2026-12-01&page=-1", "page"),
        ("department=x", "date"),
    ] {
        let res = search(query.to_owned()).await;
        assert_eq!(res.status(), 400, "{query}");
        assert_eq!(problem(res).await["field"], field, "{query}");
    }
}

/// A date's summaries are read from Redis at most once per
/// `search.max_age_ms`: a change inside that time is not seen yet (the
/// snapshot answered), and is seen once the age has passed.
#[tokio::test]
async fn searches_share_one_snapshot_per_date_for_at_most_max_age() {
    let prefix = jyt_testkit::fresh_redis_prefix();
    let cards = spawn_cards(&prefix).await;
    let routes = [Route {
        id: "pumch",
        base_url: "http://127.0.0.1:9",
        district: "dongcheng",
        level: "tertiary",
    }];
    let gateway = spawn_gateway_with(
        &routes,
        &prefix,
        &cards.base_url,
        500,
        &[("SEARCH__MAX_AGE_MS", "2000")],
    )
    .await;
    let date = "2026-12-01";
    let client = redis::Client::open(jyt_testkit::redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let avail = format!("{prefix}:{{h:pumch}}:avail:{date}");
    let set = |n: i64| redis::cmd("HSET").arg(&avail).arg("card|expert").arg(n).clone();
    set(3).query_async::<()>(&mut conn).await.unwrap();

    let http = reqwest::Client::new();
    let remaining = || {
        let req = jyt_system_tests::signed(
            &http,
            &gateway,
            "wechat",
            Method::GET,
            &format!("/v1/availability?date={date}"),
            None,
        );
        async move {
            let res = req.send().await.unwrap();
            assert_eq!(res.status(), 200);
            let page: serde_json::Value = res.json().await.unwrap();
            page["results"][0]["remaining"].as_i64().unwrap()
        }
    };
    let read_at = std::time::Instant::now();
    assert_eq!(remaining().await, 3);
    set(1).query_async::<()>(&mut conn).await.unwrap();
    let second = remaining().await;
    if read_at.elapsed() < std::time::Duration::from_millis(1500) {
        assert_eq!(second, 3, "a search inside max_age is answered from the snapshot");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if remaining().await == 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the change was never seen");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        read_at.elapsed() >= std::time::Duration::from_millis(2000),
        "seen before max_age passed"
    );
}
