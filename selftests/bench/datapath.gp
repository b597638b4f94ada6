# datapath: UDP echo across veth, four datapaths (datapath.tsv, from datapath.sh). Three panels,
# each clustered by message size with one bar per variant: echo throughput (messages/s, closed
# loop), ping-pong RTT p50 and p99 (us, log scale). Bars are medians over repetitions, whiskers
# their min and max. Baseline: udp (examples/echo --base udp, io_uring).
# Usage: gnuplot -e "dir='build/bench'" selftests/bench/datapath.gp
#        gnuplot -e "dir='build/bench'; name='datapath.same_cpu'" ... (datapath.sh --same-cpu)
if (!exists("dir")) dir = "build/bench"
if (!exists("name")) name = "datapath"
data = dir."/".name.".tsv"
set terminal pngcairo size 1500,520 font "sans,10" noenhanced
set output dir."/".name.".png"
where = name eq "datapath" ? "one CPU each" : "both on one CPU"

ncols = int(system("head -n 1 '".data."' | wc -w"))
nvar = (ncols - 1) / 9 # size, then per variant: msgs/s lo hi, p50 lo hi, p99 lo hi

set style data histogram
set style histogram errorbars gap 1 lw 1
set style fill solid 0.8 border -1
set boxwidth 0.9
set grid ytics
set errorbars small
unset xlabel # the clusters are labelled with their message size
set key below horizontal

size = 'sprintf("%d B", column(1))' # each cluster's label: its message size
set multiplot layout 1,3 title "Bertha datapaths: UDP echo across a veth pair (server and ".\
    "client in two namespaces, ".where."); baseline: udp (io_uring)"

set title "throughput, closed loop (sockperf: bursts)"
set ylabel "echoed messages/s"
set yrange [0:*]
set format y "%.0s%c"
plot for [i = 0:nvar-1] data using (column(2+9*i)):(column(3+9*i)):(column(4+9*i)):xtic(@size) \
         title columnhead(2+9*i)

set title "ping-pong RTT, p50"
set ylabel "round-trip time (us)"
set format y "%g"
plot for [i = 0:nvar-1] data using (column(5+9*i)):(column(6+9*i)):(column(7+9*i)):xtic(@size) \
         title columnhead(2+9*i)

set title "ping-pong RTT, p99"
set ylabel "round-trip time (us, log scale)"
set logscale y
set yrange [10:*]
plot for [i = 0:nvar-1] data using (column(8+9*i)):(column(9+9*i)):(column(10+9*i)):xtic(@size) \
         title columnhead(2+9*i)

unset multiplot
