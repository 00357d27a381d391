//! Report pages (`--report`) read back: their JSON, and their DOM after headless Chromium ran
//! the page's script.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The report JSON inside a page.
///
/// # Panics
///
/// When the page holds none.
pub fn report_json(page: &str) -> serde_json::Value {
    let open = r#"<script type="application/json" id="spillway-report">"#;
    let start = page.find(open).expect("the page holds its report") + open.len();
    let end = start + page[start..].find("</script>").unwrap();
    serde_json::from_str(&page[start..end]).expect("the report is JSON")
}

/// Headless Chromium, when this machine has it (`scripts/install-deps.sh` installs it).
///
/// # Panics
///
/// When it is missing and `SPILLWAY_REQUIRE_BROWSER` is set (`scripts/test.sh` sets it after
/// `install-deps.sh` installed Chromium: in CI the browser tests must run).
pub fn chromium() -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser"].iter().find_map(|name| {
        let ok = Command::new(name)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| PathBuf::from(name))
    });
    assert!(
        found.is_some() || std::env::var_os("SPILLWAY_REQUIRE_BROWSER").is_none(),
        "chromium is missing and SPILLWAY_REQUIRE_BROWSER is set (scripts/install-deps.sh installs it)"
    );
    found
}

/// The DOM of `page` after Chromium ran its script (`profile`: a fresh directory for
/// Chromium's profile).
///
/// # Panics
///
/// When Chromium fails.
pub fn rendered_dom(browser: &Path, page: &Path, profile: &Path) -> String {
    let out = Command::new(browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--virtual-time-budget=5000", "--dump-dom"])
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("running chromium");
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("the DOM is UTF-8")
}

/// The attribute `name` of the first element `tag` in `dom`.
pub fn attribute(dom: &str, tag: &str, name: &str) -> Option<String> {
    let at = dom.find(&format!("<{tag}"))?;
    let element = &dom[at..at + dom[at..].find('>')?];
    let key = format!(" {name}=\"");
    let start = element.find(&key)? + key.len();
    Some(element[start..start + element[start..].find('"')?].to_owned())
}

/// Checks a browser's DOM of a report page: rendered without errors, each chart laid out.
///
/// # Panics
///
/// When it was not.
pub fn check_rendered(dom: &str, charts: &[&str]) {
    let errors = dom.split(r#"<pre id="errors">"#).nth(1).and_then(|s| s.split("</pre>").next());
    assert_eq!(errors, Some(""), "script errors in the page");
    assert_eq!(
        attribute(dom, "body", "data-rendered").as_deref(),
        Some("ok"),
        "the page's script did not finish"
    );
    assert_eq!(attribute(dom, "body", "data-charts"), Some(charts.len().to_string()));
    for chart in charts {
        let at = dom.find(&format!(r#"data-chart="{chart}""#)).unwrap_or_else(|| panic!("no {chart} chart"));
        let svg = &dom[dom[..at].rfind("<svg").unwrap()..];
        let drawn = attribute(svg, "svg", "data-drawn").unwrap_or_else(|| panic!("{chart} not drawn"));
        assert!(drawn.parse::<usize>().unwrap() > 0, "{chart} drew nothing");
    }
}
