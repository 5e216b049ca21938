#!/usr/bin/env bash
# Autoscaling in the scaling simulator: the shipped PPO policy through the
# guardian against the Kubernetes HPA rule (70% CPU target, 10% tolerance,
# 15 s syncs, 300 s scale-down stabilization, +100% / +4 pods per 15 s) and a
# fixed maximum (100 replicas), on the flash crowd, diurnal, step, noisy and
# walk traces. No network and no proxy: `sharp-train eval-scaling` runs every
# controller on the same traces (proxy/agent/scaling_env.c).
#
#   bench/autoscale.sh                          (a few seconds)
#   EPISODES=50 bench/autoscale.sh
#   POLICY=/tmp/other.pol TRAINED=flash,step bench/autoscale.sh
#
# For each trace shape, two sets of EPISODES episodes of an hour: the
# shape's reference scenario (the reference flash crowd is 1,000 -> 10,000
# requests/s in 60 s at 600 s; replicas boot in 30 s), each episode with its
# own noise seed, and randomized variants of the shape (base, peak, timing,
# ramp, time of day drawn per seed). Per controller: SLO-violation seconds,
# replica-seconds, scaling actions (decisions that changed the count) and
# errors (requests failed or shed), as mean +- standard deviation over the
# episodes, and the ratio of the means against the HPA's. Which shapes the
# policy was trained on (TRAINED, the policy's training command in the
# README) is printed with each table: the others are held out.
#
# Targets: on the reference flash crowd at least 50% fewer SLO-violation
# seconds than the HPA at no more replica-seconds; on every other set no
# more SLO-violation seconds and no more replica-seconds than the HPA.
# SHAPES (default all five) runs a subset.
# Exit status 1 when a target is missed.
#
# Environment (defaults in brackets): BUILD [build], POLICY
# [proxy/agent/policies/scaling.pol], TRAINED [flash,step,noisy,walk: the
# shipped policy's; diurnal is held out], EPISODES [20], SEED [1], SHAPES
# [flash diurnal step noisy walk], EVAL_ARGS [none: more sharp-train
# eval-scaling options, e.g. --no-capacity-rules; --growth-to-hpa: the
# guardian as the proxy runs it live; --hpa-inflight: the HPA on SHARP's
# live metric, in flight with the queue, instead of CPU], RESULTS [bench/results].
# Writes RESULTS/autoscale.txt, autoscale-episodes.csv, the reference
# episodes' timelines (autoscale-<shape>-timeline.txt) and, with gnuplot,
# autoscale.png.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
POLICY=${POLICY:-proxy/agent/policies/scaling.pol}
TRAINED=${TRAINED:-flash,step,noisy,walk}
SHAPES=${SHAPES:-flash diurnal step noisy walk}
EVAL_ARGS=${EVAL_ARGS:-}
EPISODES=${EPISODES:-20}
SEED=${SEED:-1}
RESULTS=${RESULTS:-bench/results}
TRAIN="$BUILD/proxy/agent/sharp-train"
[ -x "$TRAIN" ] || { echo "build first (make build)"; exit 1; }
[ -f "$POLICY" ] || { echo "no policy file $POLICY"; exit 1; }
command -v python3 > /dev/null || { echo "missing python3"; exit 1; }
mkdir -p "$RESULTS"
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT

: > "$W/episodes.csv"
for shape in $SHAPES; do
    for set in reference randomized; do
        args=(--policy "$POLICY" --trace "$shape" --seed "$SEED" --episodes "$EPISODES" --per-episode $EVAL_ARGS)
        if [ "$set" = randomized ]; then
            args+=(--randomized)
        else
            args+=(--timeline "$RESULTS/autoscale-$shape-timeline.txt")
        fi
        "$TRAIN" eval-scaling "${args[@]}" > "$W/out.txt"
        sed -n "s/^episode,/$shape,$set,/p" "$W/out.txt" >> "$W/episodes.csv"
    done
done
cp "$W/episodes.csv" "$RESULTS/autoscale-episodes.csv"

set +e
python3 - "$W/episodes.csv" "$TRAINED" "$POLICY" "$EPISODES" "$SEED" "$EVAL_ARGS" <<'PY' | tee "$RESULTS/autoscale.txt"
import collections, hashlib, statistics, sys

path, trained, policy, episodes, seed, eval_args = sys.argv[1:]
trained = set(trained.split(","))
# shape,set,episode,controller,SLO-viol-s,replica-s,actions,errors,shed,peak
data = collections.OrderedDict()
for line in open(path):
    shape, kind, ep, ctl, viol, rs, act, err, shed, peak = line.strip().split(",")
    d = data.setdefault((shape, kind), collections.OrderedDict()).setdefault(ctl, collections.defaultdict(list))
    d["viol"].append(float(viol))
    d["rs"].append(float(rs))
    d["act"].append(float(act))
    d["err"].append(float(err) + float(shed))

def ms(xs):
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)

def ratio(a, b):
    if b == 0:
        return "   =" if a == 0 else "  +inf"
    return f"{100.0 * (a - b) / b:+6.1f}%"

digest = hashlib.sha256(open(policy, "rb").read()).hexdigest()[:16]
print(f"policy {policy} (sha256 {digest}...), trained on {'+'.join(sorted(trained))} (randomized variants);"
      f" {episodes} episodes of an hour per set from seed {seed}")
if eval_args.strip():
    print(f"sharp-train eval-scaling options: {eval_args.strip()}")
print("values: mean +- standard deviation over the episodes; vs hpa: the means' difference from the HPA's")
failed = []
for (shape, kind), rows in data.items():
    seen = "trained on" if shape in trained else "HELD OUT"
    print()
    print(f"{shape} ({kind}, {seen})")
    print(f"{'controller':14s} {'SLO-viol-s':>16s} {'replica-s':>20s} {'actions':>13s} {'errors':>22s}"
          f" {'viol vs hpa':>12s} {'rep-s vs hpa':>13s}")
    h = rows["hpa"]
    hv, hr = statistics.mean(h["viol"]), statistics.mean(h["rs"])
    for ctl, d in rows.items():
        v, vs = ms(d["viol"])
        r, rsd = ms(d["rs"])
        a, asd = ms(d["act"])
        e, esd = ms(d["err"])
        print(f"{ctl:14s} {v:8.1f} +- {vs:5.1f} {r:10.0f} +- {rsd:6.0f} {a:5.1f} +- {asd:4.1f} {e:11.0f} +- {esd:8.0f}"
              f" {ratio(v, hv):>12s} {ratio(r, hr):>13s}")
    p = rows["ppo+guardian"]
    pv, pr = statistics.mean(p["viol"]), statistics.mean(p["rs"])
    wins = sum(1 for a, b, c, d in zip(p["viol"], h["viol"], p["rs"], h["rs"]) if a <= b and c <= d)
    if shape == "flash" and kind == "reference":
        ok = pv <= 0.5 * hv and pr <= hr
        goal = "target: SLO-violation seconds <= 50% of the hpa's at no more replica-seconds"
    else:
        ok = pv <= hv and pr <= hr
        goal = "target: not worse than the hpa (SLO-violation seconds and replica-seconds)"
    print(f"{goal}: {'PASS' if ok else 'FAIL'} (episodes where ppo+guardian is at or below the hpa on both: "
          f"{wins}/{len(p['viol'])})")
    if not ok:
        failed.append(f"{shape} {kind}")
print()
print("all targets met" if not failed else "targets missed: " + ", ".join(failed))
sys.exit(1 if failed else 0)
PY
rc=$?
set -e

if command -v gnuplot > /dev/null; then
    gnuplot <<EOF
set terminal pngcairo size 1400,1300 font ",10"
set output "$RESULTS/autoscale.png"
set multiplot layout 3,2 title "Reference scenarios (first episode): replicas asked for (left axis) and offered load (right axis)"
set xlabel "seconds"
set ylabel "replicas"
set y2label "requests / s"
set y2tics
set ytics nomirror
set key below horizontal
set yrange [0:*]
set y2range [0:*]
do for [shape in "$SHAPES"] {
    f = sprintf("$RESULTS/autoscale-%s-timeline.txt", shape)
    set title shape
    plot f using 2:(strcol(1) eq "ppo+guardian" ? \$4 : 1/0) with steps lw 2 title "ppo+guardian", \
         f using 2:(strcol(1) eq "hpa" ? \$4 : 1/0) with steps lw 2 title "hpa", \
         f using 2:(strcol(1) eq "hpa" ? \$3 : 1/0) axes x1y2 with lines dashtype 3 lc rgb "gray40" title "offered (right)", \
         f using 2:(strcol(1) eq "ppo+guardian" && \$7 > 0 ? 1 : 1/0) with points pt 7 ps 0.4 lc rgb "red" title "ppo+guardian: violating step", \
         f using 2:(strcol(1) eq "hpa" && \$7 > 0 ? 2 : 1/0) with points pt 7 ps 0.4 lc rgb "blue" title "hpa: violating step"
}
unset multiplot
EOF
    echo "plot: $RESULTS/autoscale.png"
fi
echo "results: $RESULTS/autoscale.txt, autoscale-episodes.csv, autoscale-<shape>-timeline.txt"
exit $rc
