"""The Prometheus rules, configs and Grafana dashboard under deploy/ (no Kafka needed).

- promtool: ``check rules`` on alerts.yml, ``check config`` on the compose prometheus.yml and on
  a configuration made of the Kubernetes scrape snippet, ``test rules`` on alerts_test.yml.
  promtool comes from Debian's ``prometheus`` package (``make tools``); without it these tests
  skip, saying so.
- Drift: every metric, label and label value that alerts.yml and the dashboard use is one the
  worker exposes (tests/deploy/metric_names.py, which mirrors streams/worker/metrics.py).
- Shape: every alert has a firing and a non-firing unit test, a severity and its annotations;
  everything selects the scrape job "duewatch".
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.metric_names import (
    HISTOGRAMS,
    LABEL_VALUES,
    METRIC_LABELS,
    METRIC_NAMES,
    TARGET_LABELS,
    base_name,
    series_names,
)
from tests.support.shared import REPO, missing

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read the deploy files (pip install pyyaml)")

ROOT = REPO
PROM_DIR = ROOT / "deploy" / "prometheus"
ALERTS = PROM_DIR / "alerts.yml"
ALERTS_TEST = PROM_DIR / "alerts_test.yml"
PROM_CONFIG = PROM_DIR / "prometheus.yml"
K8S_SCRAPE = ROOT / "deploy" / "k8s" / "prometheus-scrape.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "duewatch.json"
DATASOURCES = ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"

#: The scrape job every rule and panel selects; prometheus.yml and the k8s snippet define it.
JOB = "duewatch"


# --------------------------------------------------------------------------- promtool


def find_promtool() -> str | None:
    return shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").is_file() else None)


@pytest.fixture(scope="module")
def promtool() -> str:
    path = find_promtool()
    if path is None:
        missing(
            "promtool not found (not on PATH, not /usr/bin/promtool): the Prometheus rule and config "
            "checks did not run. Install it with `make tools` (as root; Debian package 'prometheus')."
        )
    return path


def run_promtool(promtool: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [promtool, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, f"promtool {' '.join(map(str, args))} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_promtool_check_rules(promtool: str) -> None:
    out = run_promtool(promtool, "check", "rules", ALERTS.relative_to(ROOT)).stdout
    assert "SUCCESS" in out


def test_promtool_check_compose_config(promtool: str) -> None:
    # rule_files are relative to prometheus.yml, so it checks in place (and loads alerts.yml)
    out = run_promtool(promtool, "check", "config", PROM_CONFIG.relative_to(ROOT)).stdout
    assert "1 rule files found" in out


def test_promtool_check_k8s_scrape_config(promtool: str, tmp_path: Path) -> None:
    """The Kubernetes snippet inside a whole configuration that also loads alerts.yml."""
    scrape_configs = k8s_scrape_configs()
    config = {
        "global": {"scrape_interval": "10s", "evaluation_interval": "10s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": scrape_configs,
    }
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    proc = subprocess.run(
        [promtool, "check", "config", str(path)], capture_output=True, text=True, timeout=120
    )
    if proc.returncode != 0 and "field kubernetes_sd_configs not found" in proc.stdout + proc.stderr:
        # Debian builds Prometheus without Kubernetes service discovery: check everything else
        # (job, relabelling, rule files) with a static target in its place.
        for sc in scrape_configs:
            sc.pop("kubernetes_sd_configs")
            sc["static_configs"] = [{"targets": ["duewatch-0:6066"]}]
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        proc = subprocess.run(
            [promtool, "check", "config", str(path)], capture_output=True, text=True, timeout=120
        )
    assert proc.returncode == 0, f"promtool check config failed:\n{proc.stdout}\n{proc.stderr}"


def test_promtool_unit_tests(promtool: str) -> None:
    out = run_promtool(promtool, "test", "rules", ALERTS_TEST.relative_to(ROOT)).stdout
    assert "SUCCESS" in out and "FAILED" not in out


# --------------------------------------------------------------------------- the files


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def alert_rules() -> list[dict[str, Any]]:
    groups = load_yaml(ALERTS)["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def k8s_scrape_configs() -> list[dict[str, Any]]:
    [doc] = [d for d in yaml.safe_load_all(K8S_SCRAPE.read_text()) if d]
    assert doc["kind"] == "ConfigMap"
    [snippet] = doc["data"].values()
    configs = yaml.safe_load(snippet)
    assert isinstance(configs, list) and configs, "the snippet must be a list of scrape_configs"
    return configs


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def dashboard_panels(panels: list[dict[str, Any]] | None = None) -> Iterator[dict[str, Any]]:
    for panel in dashboard()["panels"] if panels is None else panels:
        yield panel
        yield from dashboard_panels(panel.get("panels") or [])


def dashboard_queries() -> Iterator[tuple[str, str, str | None]]:
    """(where, PromQL expression, legendFormat) for every panel target and query variable."""
    for panel in dashboard_panels():
        for target in panel.get("targets") or []:
            if target.get("expr"):
                yield f"panel {panel['title']!r}", target["expr"], target.get("legendFormat")
    for var in dashboard()["templating"]["list"]:
        if var.get("type") != "query":
            continue
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        # Grafana's label_values(<selector>, <label>): the selector is PromQL, the label one of its
        m = re.fullmatch(r"\s*label_values\((.*),\s*([A-Za-z_]\w*)\s*\)\s*", query)
        if m:
            yield f"variable {var['name']!r}", m.group(1), "{{" + m.group(2) + "}}"
        else:
            yield f"variable {var['name']!r}", query, None


# --------------------------------------------------------------------------- PromQL, roughly


@dataclass
class Selector:
    metric: str
    matchers: list[tuple[str, str, str]]  # (label, op, value)


@dataclass
class Query:
    """What a PromQL expression refers to: metrics, selectors, grouping labels."""

    metrics: set[str] = field(default_factory=set)
    selectors: list[Selector] = field(default_factory=list)
    grouping: set[str] = field(default_factory=set)


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GRAFANA_BRACED = re.compile(r"\$\{(\w+)[^}]*\}")
_GRAFANA_VAR = re.compile(r"\$\w+")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)?\s*\{([^}]*)\}")
_MATCHER = re.compile(r'\s*([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*')
_TOKEN = re.compile(
    r"(?P<num>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?:ms|[smhdwy])*)|(?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)"
)
_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "offset", "bool", "inf", "nan", "atan2",
}  # fmt: skip


def parse_promql(expr: str) -> Query:
    """Metric names, selectors and grouping labels of ``expr`` (a tokenizer, not a parser: enough
    for the expressions of deploy/, and tested below so it cannot silently find nothing)."""
    q = Query()
    text = _GRAFANA_BRACED.sub(r"$\1", expr)  # Grafana's ${var:format} -> $var
    for m in _SELECTOR.finditer(text):
        matchers = []
        for part in filter(str.strip, _split_matchers(m.group(2))):
            mm = _MATCHER.fullmatch(part)
            assert mm, f"cannot read label matcher {part!r} in {expr!r}"
            matchers.append((mm.group(1), mm.group(2), mm.group(3)))
        name = m.group(1) or next((v for k, op, v in matchers if k == "__name__" and op == "="), "")
        q.selectors.append(Selector(name, [x for x in matchers if x[0] != "__name__"]))
    text = _GRAFANA_VAR.sub("1", _STRING.sub('""', text))
    text = _SELECTOR.sub(lambda m: f" {m.group(1) or ''} ", text)
    text = _RANGE.sub(" ", text)
    for m in _GROUPING.finditer(text):
        q.grouping |= {label.strip() for label in m.group(1).split(",") if label.strip()}
    text = _GROUPING.sub(" ", text)
    for m in _TOKEN.finditer(text):
        ident = m.group("ident")
        if ident is None or ident.lower() in _KEYWORDS:
            continue
        if re.match(r"\s*\(", text[m.end() :]):  # a function or an aggregation
            continue
        q.metrics.add(ident)
    for sel in q.selectors:
        if sel.metric:
            q.metrics.add(sel.metric)
    return q


def _split_matchers(body: str) -> list[str]:
    """Split ``a="x,y", b=~"z"`` on the commas outside quotes."""
    parts, current, quoted = [], "", False
    for i, ch in enumerate(body):
        if ch == '"' and (i == 0 or body[i - 1] != "\\"):
            quoted = not quoted
        if ch == "," and not quoted:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return parts


def labels_of(series: str) -> frozenset[str]:
    """The labels a series may carry: its own, ``le`` for histogram buckets, the target labels."""
    own = METRIC_LABELS.get(base_name(series), frozenset())  # unknown metrics: reported elsewhere
    extra = {"le"} if series.endswith("_bucket") else set()
    return own | extra | TARGET_LABELS


def test_parse_promql_finds_what_it_should() -> None:
    q = parse_promql(
        'histogram_quantile(0.99, sum by (job, le) (rate(duewatch_detection_lag_seconds_bucket{job="duewatch", '
        'instance=~"$instance"}[$__rate_interval]))) > 2 and on (instance) up == bool 1 or time() - x_y offset 5m'
    )
    assert q.metrics == {"duewatch_detection_lag_seconds_bucket", "up", "x_y"}
    assert q.grouping == {"job", "le", "instance"}
    [sel] = q.selectors
    assert sel.metric == "duewatch_detection_lag_seconds_bucket"
    assert sel.matchers == [("job", "=", "duewatch"), ("instance", "=~", "$instance")]
    assert parse_promql('{__name__="foo", a="b,c"}').metrics == {"foo"}
    assert parse_promql("sum(rate(a_total[5m])) by (topic) / 1e3").metrics == {"a_total"}


def all_queries() -> list[tuple[str, str, list[str]]]:
    """(where, expr, label templates used on its result) over alerts.yml and the dashboard."""
    out = []
    for rule in alert_rules():
        texts = " ".join((rule.get("annotations") or {}).values())
        out.append((f"alert {rule['alert']}", rule["expr"], re.findall(r"\$labels\.(\w+)", texts)))
    for where, expr, legend in dashboard_queries():
        out.append((f"dashboard {where}", expr, re.findall(r"\{\{\s*(\w+)\s*\}\}", legend or "")))
    return out


# --------------------------------------------------------------------------- drift tests


def test_metric_names_module_is_consistent() -> None:
    assert HISTOGRAMS <= METRIC_NAMES
    assert set(METRIC_LABELS) == METRIC_NAMES
    assert all(name.startswith("duewatch_") for name in METRIC_NAMES)
    assert {metric for metric, _ in LABEL_VALUES} <= METRIC_NAMES
    assert all(label in METRIC_LABELS[metric] for metric, label in LABEL_VALUES)


def test_deploy_files_use_only_known_metrics() -> None:
    known = series_names()
    unknown = {}
    for where, expr, _ in all_queries():
        metrics = parse_promql(expr).metrics
        assert metrics, f"{where}: found no metric in {expr!r}"
        if bad := metrics - known:
            unknown[where] = sorted(bad)
    assert not unknown, f"metrics not in tests/deploy/metric_names.py (streams/worker/metrics.py): {unknown}"


def test_deploy_files_use_only_known_labels_and_values() -> None:
    problems = []
    for where, expr, templates in all_queries():
        q = parse_promql(expr)
        for sel in q.selectors:
            allowed = labels_of(sel.metric)
            for label, op, value in sel.matchers:
                if label not in allowed:
                    problems.append(f"{where}: {sel.metric} has no label {label!r}")
                closed = LABEL_VALUES.get((base_name(sel.metric), label))
                if closed is not None and op == "=" and value not in closed:
                    problems.append(
                        f"{where}: {sel.metric}{{{label}={value!r}}}: not one of {sorted(closed)}"
                    )
        union = frozenset().union(*(labels_of(m) for m in q.metrics))
        for label in sorted(q.grouping | set(templates)):
            if label not in union:
                problems.append(f"{where}: label {label!r} belongs to none of {sorted(q.metrics)}")
    assert not problems, "\n".join(problems)


def test_everything_selects_the_duewatch_job() -> None:
    problems = []
    for where, expr, _ in all_queries():
        for sel in parse_promql(expr).selectors:
            if (sel.metric in METRIC_NAMES or base_name(sel.metric) in HISTOGRAMS or sel.metric == "up") and (
                "job", "=", JOB) not in sel.matchers:  # fmt: skip
                problems.append(f"{where}: {sel.metric} without job={JOB!r}")
    for where, expr, _ in all_queries():
        for name in parse_promql(expr).metrics:
            if name not in {s.metric for s in parse_promql(expr).selectors}:
                problems.append(f"{where}: {name} without a {{job={JOB!r}}} selector")
    assert not problems, "\n".join(problems)
    assert [c["job_name"] for c in load_yaml(PROM_CONFIG)["scrape_configs"]].count(JOB) == 1
    assert [c["job_name"] for c in k8s_scrape_configs()] == [JOB]


def test_dashboard_shows_every_metric() -> None:
    used = set()
    for _, expr, _ in dashboard_queries():
        used |= {base_name(m) for m in parse_promql(expr).metrics}
    # the newest tick's timestamp is what the tick lag panel shows as a duration
    missing = METRIC_NAMES - used - {"duewatch_last_tick_timestamp_seconds"}
    assert not missing, f"metrics without a dashboard panel: {sorted(missing)}"


def test_dashboard_is_well_formed() -> None:
    d = dashboard()
    panels = list(dashboard_panels())
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels:
        pos = p["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, p["title"]
        if p["type"] != "row":
            assert p["targets"], p["title"]
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
    assert d["uid"] and d["title"]
    # the datasource variable defaults to the provisioned Prometheus
    [ds_var] = [v for v in d["templating"]["list"] if v["type"] == "datasource"]
    [provisioned] = load_yaml(DATASOURCES)["datasources"]
    assert ds_var["query"] == provisioned["type"] == "prometheus"
    assert ds_var["current"]["value"] == provisioned["uid"]
    titles = " ".join(p["title"].lower() for p in panels)
    for wanted in ("throughput", "dlq", "overdue events", "routed", "loans tracked", "delinquencies",
                   "overdue amount", "tick lag", "detection lag", "consumer lag", "held repayments", "ready"):  # fmt: skip
        assert wanted in titles, f"no panel about {wanted!r}"


# --------------------------------------------------------------------------- shape of the rules


def test_alert_rules_are_well_formed() -> None:
    rules = alert_rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names)), "alert names must be unique"
    for rule in rules:
        assert re.fullmatch(r"Duewatch[A-Z]\w+", rule["alert"]), rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]
        assert re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))), f"{rule['alert']}: needs a `for`"


def test_alerts_cover_the_issue() -> None:
    """The alerts the issue asks for, by the metric each one is about."""
    by_metric: dict[str, set[str]] = {}
    for rule in alert_rules():
        for metric in parse_promql(rule["expr"]).metrics:
            by_metric.setdefault(base_name(metric), set()).add(rule["alert"])
    for metric in (
        "duewatch_consumer_lag",  # consumer lag growing
        "duewatch_tick_lag_seconds",  # tick lag above a threshold
        "duewatch_dlq_records_total",  # DLQ rate
        "duewatch_detection_lag_seconds",  # detection lag p99
        "duewatch_records_consumed_total",  # no ticks
        "duewatch_last_tick_timestamp_seconds",  # no ticks
        "up",  # worker down
        "duewatch_recovery_in_progress",  # recovery stuck
        "duewatch_ready",  # not ready
    ):
        assert metric in by_metric, f"no alert on {metric}"


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    tests = load_yaml(ALERTS_TEST)
    assert tests["rule_files"] == [ALERTS.name]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in tests["tests"]:
        for check in case.get("alert_rule_test") or []:
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {r["alert"] for r in alert_rules()}
    assert names - firing == set(), "alerts without a firing test case"
    assert names - quiet == set(), "alerts without a non-firing test case"
    assert (firing | quiet) - names == set(), "test cases for alerts that do not exist"
