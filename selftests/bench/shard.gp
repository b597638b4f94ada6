# shard: p99 latency against achieved throughput, one line per variant, from the open-loop sweep
# of selftests/bench/shard.sh (shard.tsv: one row per variant and offered rate, medians over
# repetitions). Saturated points (skipped, failed or >1% lost: p99 NaN) are left out. The dashed
# lines are the p99 bounds of the report (1 ms and 500 us). Baseline: proxy (examples/kv_proxy).
# Writes shard.png and shard.svg.
# Usage: gnuplot -e "dir='build/bench'" selftests/bench/shard.gp
if (!exists("dir")) dir = "build/bench"
if (!exists("name")) name = "shard"
data = dir."/".name.".tsv"
variants = system("awk 'NR > 1 && !seen[$1]++ { printf \"%s \", $1 }' '".data."'")

set title "Sharded memcached across veth: open-loop sweep, p99 vs achieved throughput\n".\
    "(4 memcached + the server side on CPU 0, load on CPU 1; baseline: shard/proxy)"
set xlabel "achieved throughput (requests/s)"
set ylabel "p99 latency (us, log scale, from the intended send time)"
set logscale y
set format x "%.0s%c"
set grid xtics ytics mytics
set key top left
set xrange [0:*]
set arrow 1 from graph 0, first 1000 to graph 1, first 1000 nohead dt 2 lc rgb "gray40"
set arrow 2 from graph 0, first 500 to graph 1, first 500 nohead dt 3 lc rgb "gray40"
set datafile missing "NaN"

do for [fmt in "png svg"] {
    if (fmt eq "png") { set terminal pngcairo size 1000,620 font "sans,10" noenhanced }
    if (fmt eq "svg") { set terminal svg size 1000,620 font "sans,10" noenhanced }
    set output dir."/".name.".".fmt
    plot for [v in variants] data using (strcol(1) eq v ? $3 : NaN):(strcol(1) eq v ? $8 : NaN) \
        with linespoints lw 2 pt 7 title v
    set output
}
