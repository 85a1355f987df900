//! `GET /tasks`: newest first, cursor pages, status filter, query validation.

use std::collections::HashSet;

use serde_json::{json, Value};

use crate::helpers::{assert_problem, error_fields, ids, spawn_app, User};

#[tokio::test]
async fn pages_cover_every_task_exactly_once_newest_first() {
    let app = spawn_app().await;
    let user = User::new();
    let mut created = Vec::new();
    for i in 0..23 {
        created.push(app.created(&user, &format!("task {i}")).await["id"].as_str().unwrap().to_owned());
    }
    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut query = "?limit=5".to_owned();
    loop {
        let page = app.list_page(&user, &query).await;
        sizes.push(ids(&page).len());
        seen.extend(ids(&page));
        match page["nextCursor"].as_str() {
            Some(cursor) => query = format!("?limit=5&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(sizes, [5, 5, 5, 5, 3]);
    created.reverse();
    assert_eq!(seen, created, "every task once, newest first");
}

#[tokio::test]
async fn the_default_page_is_50_and_100_is_the_most() {
    let app = spawn_app().await;
    let user = User::new();
    for i in 0..51 {
        app.created(&user, &format!("task {i}")).await;
    }
    let first = app.list_page(&user, "").await;
    assert_eq!(ids(&first).len(), 50);
    let cursor = first["nextCursor"].as_str().expect("a second page").to_owned();
    let second = app.list_page(&user, &format!("?cursor={cursor}")).await;
    assert_eq!(ids(&second).len(), 1);
    assert!(second["nextCursor"].is_null());
    let all = app.list_page(&user, "?limit=100").await;
    assert_eq!(ids(&all).len(), 51);
    assert!(all["nextCursor"].is_null());
}

#[tokio::test]
async fn the_status_filter_pages_too() {
    let app = spawn_app().await;
    let user = User::new();
    let mut completed = HashSet::new();
    let mut open = HashSet::new();
    for i in 0..7 {
        let id = app.created(&user, &format!("task {i}")).await["id"].as_str().unwrap().to_owned();
        if i % 2 == 0 {
            assert_eq!(app.complete(&user, &id).await.status(), 200);
            completed.insert(id);
        } else {
            open.insert(id);
        }
    }
    let open_page = app.list_page(&user, "?status=open").await;
    assert_eq!(ids(&open_page).into_iter().collect::<HashSet<_>>(), open);
    assert!(open_page["items"].as_array().unwrap().iter().all(|t| t["status"] == "open"));

    let mut seen = Vec::new();
    let mut query = "?status=completed&limit=1".to_owned();
    loop {
        let page = app.list_page(&user, &query).await;
        assert!(page["items"].as_array().unwrap().iter().all(|t| t["status"] == "completed"));
        seen.extend(ids(&page));
        match page["nextCursor"].as_str() {
            Some(cursor) => query = format!("?status=completed&limit=1&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), completed.len());
    assert_eq!(seen.into_iter().collect::<HashSet<_>>(), completed);
}

#[tokio::test]
async fn a_user_lists_only_their_own_tasks() {
    let app = spawn_app().await;
    let (alice, bob) = (User::new(), User::new());
    let mine = app.created(&alice, "alice's").await;
    app.created(&bob, "bob's").await;
    let page = app.list_page(&alice, "").await;
    assert_eq!(page, json!({ "items": [mine], "nextCursor": null }));
    let empty = app.list_page(&User::new(), "").await;
    assert_eq!(empty, json!({ "items": [], "nextCursor": null }));
}

#[tokio::test]
async fn bad_query_values_are_400_with_the_field() {
    let app = spawn_app().await;
    let user = User::new();
    app.created(&user, "t").await;
    for (query, field) in [
        ("?limit=0", "limit"),
        ("?limit=101", "limit"),
        ("?limit=ten", "limit"),
        ("?limit=-1", "limit"),
        ("?limit=", "limit"),
        ("?status=done", "status"),
        ("?status=", "status"),
        ("?cursor=not-a-cursor", "cursor"),
        ("?cursor=", "cursor"),
    ] {
        let problem = assert_problem(app.list(&user, query).await, 400).await;
        assert_eq!(error_fields(&problem), [field], "{query}: {problem}");
    }
    let both = assert_problem(app.list(&user, "?limit=0&status=done").await, 400).await;
    assert_eq!(error_fields(&both), ["limit", "status"]);
    // Unknown parameters are ignored.
    let page: Value = app.list_page(&user, "?color=blue&limit=1").await;
    assert_eq!(ids(&page).len(), 1);
}
