# plot.gp: fpp-bench's plot. Called as gnuplot -e "csv='rows.csv'; out='plot.png'" plot.gp
# Left: noop throughput against workers; right: spin:1000 speedup over serial. One line per executor.
set terminal pngcairo size 1200,480 font ",10"
set output out
set datafile separator ","
set key top left
set grid
set multiplot layout 1,2
execs = "fpp-process fpp-thread fork cf-process cf-thread mp-imap"
set title "noop: tasks/s (log scale)"
set xlabel "workers"
set ylabel "tasks/s"
set logscale y
plot for [e in execs] csv using (strcol(1) eq e && strcol(2) eq "noop" ? $3 : 1/0):5 with linespoints title e
unset logscale y
set title "spin:1000 (1 ms tasks): speedup over serial"
set ylabel "speedup"
plot for [e in execs] csv using (strcol(1) eq e && strcol(2) eq "spin:1000" ? $3 : 1/0):7 with linespoints title e
unset multiplot
