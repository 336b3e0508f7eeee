"""bench_engine's report: the tables of the workers' results and the engine's goals, PASS/MISS.
A worker's document is {"system", "size", "results": [result, ...], "info": {...}}."""
from common import print_table, verdict

# Goals of the storage-engine issue (ours / LevelDB, ours with fsync=interval).
GOAL_RATIOS = (("fillrandom", "put", 0.3),
               ("readrandom", "disk get", 0.3),
               ("readmissing", "missing get", 0.5))
GOAL_BYTES_PER_KEY = 24.0
GOAL_GROWTH_P99 = 2.0
GOAL_GROWTH_DISK_GETS = 0.5  # readrandom, ours / LevelDB, at the largest growth size


def fmt_int(x):
    return "-" if x is None else f"{x:,.0f}"


def fmt_f(x, digits=2):
    return "-" if x is None else f"{x:.{digits}f}"


def mib(b):
    return "-" if b is None else f"{b / 2**20:.1f} MiB"


def index_of(docs):
    """{(workload, system): result} for one size."""
    return {(r["workload"], d["system"]): r for d in docs for r in d["results"]}


def ratio(a, b):
    if a is None or b is None or not b.get("ops_per_s") or a.get("ops_per_s") is None:
        return None
    return a["ops_per_s"] / b["ops_per_s"]


def bytes_per_key(stats):
    keys = stats.get("keys_on_disk") if stats else None
    if not keys or "index_bytes" not in stats or "bloom_bytes" not in stats:
        return None
    # Every in-memory lookup structure: sparse indexes, per-segment blooms, the engine's key filter.
    return (stats["index_bytes"] + stats["bloom_bytes"] + stats.get("key_filter_bytes", 0)) / keys


def wrong_results(r):
    """Correctness problems seen in a result ('' if none)."""
    fields = ("not_found", "value_mismatches", "found_unexpectedly")
    return "; ".join(f"{f}={r[f]}" for f in fields if r and r.get(f))


def warnings_of(r):
    w = [x for x in (wrong_results(r), (r or {}).get("note")) if x]
    return ("!! " + "; ".join(w)) if w else ""


def print_results(title, workloads, systems, docs):
    """One line per workload and system, then each system's memory and our engine's stats."""
    res = index_of(docs)
    print(f"\n== {title} ==")
    rows = [("workload", "system", "ops/s", "us/op", "p50 us", "p99 us", "vs leveldb", "")]
    for w in workloads:
        for s in systems:
            r = res.get((w, s))
            if r is None:
                rows.append((w, s, "(no result)"))
                continue
            rt = ratio(r, res.get((w, "leveldb")))
            rows.append((w, s, fmt_int(r["ops_per_s"]), fmt_f(r["us_per_op"]), fmt_f(r["p50_us"]),
                         fmt_f(r["p99_us"]), "-" if rt is None else fmt_f(rt) + "x",
                         warnings_of(r)))
    print_table(rows, align="<<>>>>><")
    for d in docs:
        info = d.get("info", {})
        peak, base = info.get("peak_rss_bytes"), info.get("baseline_rss_bytes")
        line = f"peak RSS {d['system']:<8} {mib(peak):>11}"
        if peak and base:
            line += f"  (baseline at start {mib(base)}, +{mib(peak - base)})"
        if info.get("anon_rss_bytes"):
            line += f"  anon RSS (max sampled) {mib(info['anon_rss_bytes'])}"
        if info.get("children_peak_rss_bytes"):
            line += f"  largest child process peak {mib(info['children_peak_rss_bytes'])}"
        print(line)
    for d in docs:
        st = d.get("info", {}).get("stats")
        if d["system"] == "yaddb" and st:
            print(f"yaddb stats after reopen: segments={st.get('segments')} "
                  f"keys_on_disk={st.get('keys_on_disk')} index_bytes={st.get('index_bytes')} "
                  f"bloom_bytes={st.get('bloom_bytes')} "
                  f"key_filter_bytes={st.get('key_filter_bytes')}"
                  f" -> index+blooms {fmt_f(bytes_per_key(st))} B/key "
                  f"(settle {fmt_f(d['info'].get('settle_seconds'))} s)")
    for d in docs:
        if d.get("error"):
            print(f"!! {d['system']}: {d['error']} (figures above may be partial)")


def goal_line(status, text, goals):
    goals.append({"status": status, "goal": text})
    print(f"{status:<5} {text}")


def bytes_per_key_goal(n, stats, goals):
    bpk = bytes_per_key(stats)
    goal_line("n/a" if bpk is None else verdict(bpk <= GOAL_BYTES_PER_KEY),
              f"{n:>10,} keys  index+bloom <= {GOAL_BYTES_PER_KEY:g} B/key: "
              + (f"{bpk:.2f}" if bpk is not None else "not measured"), goals)


def print_compare_goals(sizes_docs, sync_docs, goals):
    """Ratios to LevelDB and bytes per key for each size; fillsync against sqlite, as INFO."""
    print("\n== Goals (ours with fsync=interval, ratio = ours/LevelDB ops/s) ==")
    for n, docs in sizes_docs.items():
        res = index_of(docs)
        for workload, label, target in GOAL_RATIOS:
            ours = res.get((workload, "yaddb"))
            rt = ratio(ours, res.get((workload, "leveldb")))
            text = f"{n:>10,} keys  {label} >= {target}x LevelDB: "
            status = "n/a" if rt is None else verdict(rt >= target)
            if rt is not None and wrong_results(ours):  # wrong answers void the figure
                status, text = "MISS", text + f"(wrong results: {wrong_results(ours)}) "
            goal_line(status, text + (f"{rt:.3f}x" if rt is not None else "not measured"), goals)
        bytes_per_key_goal(n, next((d["info"].get("stats") for d in docs
                                    if d["system"] == "yaddb"), None), goals)
    res = index_of(sync_docs)
    ours, sq = res.get(("fillsync", "yaddb")), res.get(("fillsync", "sqlite"))
    rt = ratio(ours, sq)
    goal_line("INFO", "fsync=always vs sqlite synchronous=FULL: " + (
        f"{rt:.2f}x ({fmt_int(ours['ops_per_s'])} vs {fmt_int(sq['ops_per_s'])} ops/s)"
        if rt is not None else "not measured"), goals)


def growth_row(label, n, d):
    """One row of the growth table, and the wrong results seen in it."""
    res = {r["workload"]: r for r in d["results"]}
    get, miss, fill = (res.get(w, {}) for w in ("readrandom", "readmissing", "fillbatch"))
    info = d.get("info", {})
    st = info.get("stats") or {}
    wrong = [f"{label} {n:,}: {w}" for w in (wrong_results(get), wrong_results(miss)) if w]
    problems = [w for w in (warnings_of(get), warnings_of(miss)) if w]
    if d.get("error"):
        problems.append(f"!! {d['error']}")
    row = (label, f"{n:,}", fmt_int(fill.get("ops_per_s")), fmt_int(get.get("ops_per_s")),
           fmt_f(get.get("p50_us")), fmt_f(get.get("p99_us")), fmt_f(miss.get("p99_us")),
           mib(info.get("peak_rss_bytes")), mib(info.get("anon_rss_bytes")),
           mib(info.get("children_peak_rss_bytes")), fmt_f(bytes_per_key(st)),
           str(st.get("segments", st.get("tables", "-"))), "  ".join(problems))
    return row, wrong


def print_growth(sizes, docs, theirs, batch_size, goals):
    """One line per size for our engine and for LevelDB at the sizes in `theirs` ({size: doc}),
    then the growth, disk-gets and bytes-per-key goals."""
    print(f"\n== growth (fill with write_batch of {batch_size}, then flush, "
          f"wait_for_compactions, reopen; gets = readrandom) ==")
    rows = [("system", "keys", "fill ops/s", "gets/s", "get p50", "get p99", "miss p99",
             "peak RSS", "anon RSS", "child RSS", "idx+bloom B/key", "segments/tables", "")]
    p99, wrong = {}, []
    for n, d in zip(sizes, docs):
        row, bad = growth_row("yaddb", n, d)
        rows.append(row)
        wrong += bad
        p99[n] = next((r.get("p99_us") for r in d["results"] if r["workload"] == "readrandom"),
                      None)
    for n, d in theirs.items():
        rows.append(growth_row("leveldb", n, d)[0])
    print_table(rows, align="<" + ">" * 11 + "<")
    print("\n== Goals ==")
    small, large = p99.get(sizes[0]), p99.get(sizes[-1])
    if len(sizes) < 2 or small is None or large is None:
        goal_line("n/a", "get p99 at the largest size <= 2x its value at 100k: not measured", goals)
    else:
        rt = large / small
        goal_line(verdict(rt <= GOAL_GROWTH_P99 and not wrong),
                  f"get p99 at {sizes[-1]:,} <= {GOAL_GROWTH_P99:g}x its value at {sizes[0]:,}: "
                  f"{large:.2f} / {small:.2f} us = {rt:.2f}x"
                  + (f" (wrong results: {'; '.join(wrong)})" if wrong else ""), goals)
    disk_gets_goal(sizes[-1], docs[-1], theirs.get(sizes[-1]), goals)
    for n, d in zip(sizes, docs):
        bytes_per_key_goal(n, d.get("info", {}).get("stats"), goals)


def disk_gets_goal(n, ours_doc, theirs_doc, goals):
    """readrandom (gets of present keys after reopen) ours / LevelDB's, in the same run."""
    ours, theirs = ({r["workload"]: r for r in d["results"]}.get("readrandom") if d else None
                    for d in (ours_doc, theirs_doc))
    rt = ratio(ours, theirs)
    text = f"disk gets at {n:,} >= {GOAL_GROWTH_DISK_GETS:g}x LevelDB: "
    if rt is None:
        goal_line("n/a", text + "not measured", goals)
        return
    bad = "; ".join(w for w in (wrong_results(ours), wrong_results(theirs)) if w)
    goal_line(verdict(rt >= GOAL_GROWTH_DISK_GETS and not bad),
              text + f"ours / theirs = {ours['ops_per_s']:,.0f} / {theirs['ops_per_s']:,.0f} "
              f"gets/s = {rt:.2f}x" + (f" (wrong results: {bad})" if bad else ""), goals)
