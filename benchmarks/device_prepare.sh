#!/usr/bin/env bash
# Prepare, on the development box, what a lent GPU machine needs for benchmarks/gpu.sh, within the
# 64 MiB the device tool carries (the tracked tree counts too), and print the call to make.
#   - .device-site/: the packages the machine lacks (../shared/device/stage.sh), less the Java PTB
#     tokenizer's jar (5.9 MB; the machine has no Java: scoring falls back to Python) and caches;
#   - data/flickr8k-test/Flicker8k_Dataset: the 1,000 photos only (26.7 MB), not the text files.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ../shared/device/stage.sh
rm -f .device-site/pycocoevalcap/tokenizer/*.jar
find .device-site -name __pycache__ -prune -exec rm -rf {} +
rm -rf data/flickr8k-test && mkdir -p data/flickr8k-test
cp -r ../shared/data/flickr8k-test/Flicker8k_Dataset data/flickr8k-test/
tracked=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
untracked=$(git ls-files -z --others --exclude-standard | xargs -0 -r du -cb 2>/dev/null | tail -1 | cut -f1)
carried=$(du -sb .device-site data/flickr8k-test | awk '{s += $1} END {print s}')
total=$((tracked + ${untracked:-0} + carried))
echo "the tree that travels: $((total / 1048576)) MiB of 64 (tracked $((tracked / 1048576)), untracked" \
     "$((${untracked:-0} / 1048576)), carried $((carried / 1048576)))"
[[ $total -le $((64 * 1048576)) ]] || { echo "over the device tool's 64 MiB: trim before the call"; exit 1; }
echo 'then: run(command="bash benchmarks/gpu.sh", carry=[".device-site", "data/flickr8k-test"], timeout_s=590)'
