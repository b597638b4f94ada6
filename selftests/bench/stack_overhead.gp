# stack_overhead: two panels by message size, every variant relative to the inline io_uring loop
# (= 1). Top: echo msgs/s (higher is better). Bottom: CPU-us per message, server + client
# (lower is better). Bars are the paired ratios (median over repetitions of variant / baseline
# measured in the same repetition), whiskers span their min and max.
# Usage: gnuplot -e "dir='build/bench'" selftests/bench/stack_overhead.gp
if (!exists("dir")) dir = "build/bench"
data = dir."/stack_overhead.tsv"
set terminal pngcairo size 1100,900 font "sans,10" noenhanced
set output dir."/stack_overhead.png"

ncols = int(system("head -n 1 '".data."' | wc -w"))
nvar = (ncols - 1) / 6 # size, then per variant: ratio lo hi cpu cpu_lo cpu_hi

# Each y range runs from a little below the lowest whisker to a little above the highest, so
# that a few percent stay visible.
lo = 1.0
hi = 1.0
set style data histogram
set style histogram errorbars gap 1 lw 1
set style fill solid 0.8 border -1
set boxwidth 0.9
set grid ytics
set errorbars small
set xlabel "message size (bytes)"

set multiplot layout 2,1 title "Bertha stack overhead: UDP echo over loopback, both ends running the variant; baseline (= 1): inline io_uring loop"

do for [c = 3:ncols:6] {
    stats data using c nooutput
    if (STATS_min < lo) { lo = STATS_min }
    stats data using c + 1 nooutput
    if (STATS_max > hi) { hi = STATS_max }
}
set yrange [floor(lo * 20 - 1) / 20.0:ceil(hi * 20 + 1) / 20.0]
set ylabel "msgs/s / inline (higher is better)"
set key outside right top vertical
plot for [i = 0:nvar-1] data using (column(2+6*i)):(column(3+6*i)):(column(4+6*i)):xtic(1) \
         title columnhead(2+6*i), \
     1 with lines lw 2 dt 2 lc rgb "black" title "inline io_uring loop"

lo = 1.0
hi = 1.0
set autoscale y # stats skips values outside the current range: forget the first panel's
do for [c = 6:ncols:6] {
    stats data using c nooutput
    if (STATS_min < lo) { lo = STATS_min }
    stats data using c + 1 nooutput
    if (STATS_max > hi) { hi = STATS_max }
}
set yrange [floor(lo * 20 - 1) / 20.0:ceil(hi * 20 + 1) / 20.0]
set ylabel "CPU-us per msg / inline (lower is better)"
plot for [i = 0:nvar-1] data using (column(5+6*i)):(column(6+6*i)):(column(7+6*i)):xtic(1) \
         title columnhead(2+6*i), \
     1 with lines lw 2 dt 2 lc rgb "black" title "inline io_uring loop"

unset multiplot
