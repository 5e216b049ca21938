#!/usr/bin/env bash
# Retrains the shipped scaling policy exactly as it was trained and compares
# the bytes with proxy/agent/policies/scaling.pol. The policy was trained at
# the commit below; the trainer has changed since (the guardian's rules the
# training runs through), so the current tree's sharp-train makes another
# policy from the same command. This builds that commit's sharp-train in a
# temporary worktree (needs the repository's history) and runs its command:
# 2M decisions, 2 to 10 minutes on a shared 2-core machine.
#
#   scripts/reproduce_policy.sh
set -euo pipefail
cd "$(dirname "$0")/.."
COMMIT=b3e3448
SHIPPED=$PWD/proxy/agent/policies/scaling.pol
WT=$(mktemp -d /tmp/sharp-policy-XXXXXX)
cleanup() { git worktree remove --force "$WT" >/dev/null 2>&1 || rm -rf "$WT"; }
trap cleanup EXIT
git worktree add -q --detach "$WT" "$COMMIT"
cd "$WT"
meson setup build >/dev/null
ninja -C build proxy/agent/sharp-train >/dev/null
build/proxy/agent/sharp-train scaling --trace flash,flash,step,noisy,walk,walk --seed 2 --steps 2000000 \
    --cost-weight 0 --excess-weight 0.1 --drop-weight 0.3 --change-weight 0.005 --ent-coef 0.01 \
    --slo-p99-range 0.2,0.6 --no-adaptive-share 0.25 --down-max-utilization 0.85 \
    --quiet --out "$WT/scaling.pol"
if cmp -s "$WT/scaling.pol" "$SHIPPED"; then
    echo "reproduced: $(sha256sum < "$SHIPPED" | cut -c1-16) (trained at $COMMIT)"
else
    echo "differs from the shipped policy" >&2
    exit 1
fi
