# negotiate: time to first echoed message on a fresh connection, per variant, across the veth
# pair (negotiate.tsv, from negotiate_veth.sh) and, when present, over loopback
# (negotiate.loopback.tsv). Bars: p50 and p99 in us. Baseline of each group: prearranged.
# Writes negotiate_veth.png (selftests/bench/run draws NAME.gp after NAME.sh).
# Usage: gnuplot -e "dir='build/bench'" selftests/bench/negotiate_veth.gp
if (!exists("dir")) dir = "build/bench"
veth = dir."/negotiate.tsv"
lo = dir."/negotiate.loopback.tsv"
have_lo = system("test -s '".lo."' && echo 1 || echo 0") + 0
set terminal pngcairo size 1100,500 font "sans,10" noenhanced
set output dir."/negotiate_veth.png"
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set boxwidth 0.9
set grid ytics
set logscale y
set ylabel "time to first echo (us, log scale)"
set key outside right top vertical
set xtics rotate by -20
# every ::1: the first line of each file names the columns
set title "Bertha negotiation: connect + send + echo on a fresh connection (baseline: prearranged; .s16: 16+16-slot udp pool)"
if (have_lo) {
    plot veth every ::1 using 2:xtic(1) title "veth p50", '' every ::1 using 3 title "veth p99", \
         lo every ::1 using 2 title "loopback p50", '' every ::1 using 3 title "loopback p99"
} else {
    plot veth every ::1 using 2:xtic(1) title "veth p50", '' every ::1 using 3 title "veth p99"
}
