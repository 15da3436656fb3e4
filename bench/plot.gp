# plot.gp: fpp-bench's plot. Called as gnuplot -e "csv='rows.csv'; out='plot.png'" plot.gp
# Left: noop throughput against workers; right: spin:1000 speedup over serial. One line per
# executor (rows picked with awk, so that each executor's points are consecutive).
set terminal pngcairo size 1200,480 font ",10"
set output out
set datafile separator ","
set key top left
set grid
set xtics 1
set xrange [0.5:*]
set multiplot layout 1,2
execs = "fpp-process fpp-thread fork cf-process cf-thread mp-imap"
rows(e, w) = sprintf("< awk -F, '$1==\"%s\" && $2==\"%s\"' %s", e, w, csv)
set title "noop: tasks/s (log scale)"
set xlabel "workers"
set ylabel "tasks/s"
set logscale y
plot for [e in execs] rows(e, "noop") using 3:5 with linespoints lw 2 title e
unset logscale y
set title "spin:1000 (1 ms tasks): speedup over serial"
set ylabel "speedup"
set yrange [0:2.2]
plot for [e in execs] rows(e, "spin:1000") using 3:7 with linespoints lw 2 title e, 2 with lines dt 2 lc "gray" title "ideal"
unset multiplot
