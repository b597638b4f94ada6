# dispatch: ns per 64-byte UDP packet through BPF_PROG_TEST_RUN, per variant (bars: median over
# repetitions, whiskers: min and max), against the bare XDP_PASS program (the first bar). The
# dashed line is the goal for the dispatcher + 1 stage: twice the bare program's median.
# Reads dispatch.tsv (its first line, the column names, is a comment); writes dispatch.png.
# Usage: gnuplot -e "dir='build/bench'" selftests/bench/dispatch.gp
if (!exists("dir")) dir = "build/bench"
data = dir."/dispatch.tsv"
set terminal pngcairo size 900,500 font "sans,10" noenhanced
set output dir."/dispatch.png"

stats data using 6 nooutput # goal_ns: the same on every row
goal = STATS_max
stats data using 4 nooutput
top = STATS_max > goal ? STATS_max : goal

set title "Bertha XDP dispatcher: ns per 64-byte UDP packet (BPF_PROG_TEST_RUN); baseline: bare XDP_PASS program"
set style fill solid 0.8 border -1
set boxwidth 0.6
set grid ytics
set xrange [-0.6:STATS_records - 0.4]
set yrange [0:top * 1.25]
set ylabel "ns per packet (lower is better)"
set key left top
plot data using 0:2:xtic(1) with boxes lc rgb "#4a7ab5" title "median over repetitions", \
     '' using 0:2:3:4 with yerrorbars lc rgb "black" pt -1 title "min-max", \
     '' using 0:4:(sprintf("%.1f ns\nx%.2f", $2, $5)) with labels offset 0,1.5 notitle, \
     goal with lines lw 2 dt 2 lc rgb "black" title sprintf("goal for stages1: 2 x bare = %.1f ns", goal)
