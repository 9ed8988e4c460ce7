//! `tailprobe experiment` against an OpenAI-compatible server that is not
//! ours (root): a small fake in the ways vLLM matters here (model list,
//! errors for unknown models, streams with finish_reason or cut short).

mod experiment_support;

use experiment_support::{dir, outputs, run};
use serde_json::Value;
use tailprobe_tests::skip_unless_root;

/// A small OpenAI-compatible server like vLLM in the ways that matter
/// here: it lists one model, rejects any other name with an error answer,
/// and streams `max_tokens` tokens with a finish_reason — or, `cut`, ends
/// every stream after the role chunk (no content, no finish_reason).
struct FakeOpenAi {
    addr: std::net::SocketAddr,
}

fn fake_answer(mut s: std::net::TcpStream, cut: bool) -> std::io::Result<()> {
    use std::io::{BufRead as _, BufReader, Read as _, Write as _};
    let mut r = BufReader::new(s.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    let reply = |s: &mut std::net::TcpStream, status: &str, json: String| {
        write!(
            s,
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
            json.len()
        )
    };
    if line.starts_with("GET /v1/models") {
        return reply(
            &mut s,
            "200 OK",
            r#"{"object":"list","data":[{"id":"real-model","object":"model"}]}"#.into(),
        );
    }
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let model = v["model"].as_str().unwrap_or("");
    if model != "real-model" {
        return reply(
            &mut s,
            "404 Not Found",
            format!(
                r#"{{"error":{{"message":"The model `{model}` does not exist.","type":"NotFoundError","code":404}}}}"#
            ),
        );
    }
    let n = v["max_tokens"].as_u64().unwrap_or(1);
    s.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n",
    )?;
    let chunk = |text: &str, finish: Value| {
        format!(
            "data: {}\n\n",
            serde_json::json!({"id": "x", "object": "text_completion", "model": "real-model",
                "choices": [{"index": 0, "text": text, "finish_reason": finish}]})
        )
    };
    if cut {
        s.write_all(chunk("", Value::Null).as_bytes())?;
        return s.write_all(b"data: [DONE]\n\n");
    }
    for i in 0..n {
        std::thread::sleep(std::time::Duration::from_millis(1));
        let finish = if i + 1 == n {
            Value::from("length")
        } else {
            Value::Null
        };
        s.write_all(chunk(" tok", finish).as_bytes())?;
    }
    let usage = serde_json::json!({"id": "x", "object": "text_completion", "model": "real-model", "choices": [],
        "usage": {"prompt_tokens": 8, "completion_tokens": n, "total_tokens": n + 8}});
    s.write_all(format!("data: {usage}\n\ndata: [DONE]\n\n").as_bytes())
}

impl FakeOpenAi {
    fn start(cut: bool) -> FakeOpenAi {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for c in l.incoming().map_while(Result::ok) {
                std::thread::spawn(move || fake_answer(c, cut));
            }
        });
        FakeOpenAi { addr }
    }
}

const REAL_PLAN: &str = r#"
name = "real server (test)"
governors = ["current"]
pinning = ["unpinned"]
noise = ["none"]
repeats = 1
warmup_s = 0.2
measure_s = 1.0
rate = 20.0
sweep = []
max_tokens = 8
max_total_s = 40.0
interference_min_ms = 1e9
"#;

/// Against a server that checks model names: the model is discovered and
/// said, answers are complete with the asked tokens; a wrong --model stops
/// at calibration quoting the server; a server that cuts streams short is
/// refused with the reason.
#[test]
fn root_a_real_openai_server_model_discovery_errors_and_cut_streams() {
    skip_unless_root!("root_a_real_openai_server_model_discovery_errors_and_cut_streams");
    let me = std::process::id().to_string();
    let go = |name: &str, cut: bool, extra: &[&str]| {
        let d = dir(name);
        let plan = d.join("plan.toml");
        std::fs::write(&plan, REAL_PLAN).unwrap();
        let srv = FakeOpenAi::start(cut);
        let url = format!("http://{}", srv.addr);
        let mut a: Vec<String> = outputs(&d);
        a.extend(
            [
                "--plan",
                plan.to_str().unwrap(),
                "--url",
                &url,
                "--pid",
                &me,
            ]
            .map(String::from),
        );
        a.extend(extra.iter().map(|s| s.to_string()));
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        (run(&a, &d), d)
    };

    let (out, d) = go("real-ok", false, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{err}\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let r: Value =
        serde_json::from_slice(&std::fs::read(d.join("out/results.json")).unwrap()).unwrap();
    let how = r["calibration"]["how"].as_str().unwrap();
    assert!(how.contains("model real-model (discovered"), "{how}");
    let m = &r["cells"][0]["metrics"];
    assert!(m["ok"].as_u64().unwrap() > 5, "{m}");
    assert_eq!(m["incomplete"], 0);
    assert_eq!(m["tokens"]["requested"], 8);
    assert_eq!(m["tokens"]["per_request_avg"], 8.0);
    assert!(m["tokens"]["tokens_per_s"].as_f64().unwrap() > 0.0);
    assert!(r["cells"][0]["metrics"]["gap"]["method"]
        .as_str()
        .unwrap()
        .starts_with("time window"));
    let _ = std::fs::remove_dir_all(&d);

    let (out, d) = go("real-wrong-model", false, &["--model", "tailprobe-sim"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("calibration") && err.contains("does not exist"),
        "{err}"
    );
    assert!(!d.join("out/results.json").exists());
    let _ = std::fs::remove_dir_all(&d);

    let (out, d) = go("real-cut", true, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("incomplete"), "{err}");
    assert!(!d.join("out/results.json").exists());
    let _ = std::fs::remove_dir_all(&d);
}
