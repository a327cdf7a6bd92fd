#!/bin/bash
# benchmarks/perf22_replay.sh SRC TAG (SRC: a src folder for PYTHONPATH; outputs in the current folder)
SRC=$1; TAG=$2
for n in 4 20; do
PYTHONPATH=$SRC PYTHONHASHSEED=0 OPENBLAS_NUM_THREADS=1 setarch x86_64 -R valgrind --tool=callgrind --toggle-collect=_operator_call --callgrind-out-file=$TAG.decide.$n.out ${PYTHON:-python} $(dirname "$0")/perf22_replay.py $n > /dev/null 2>$TAG.decide.$n.err
done
a=$(grep -o "Collected : *[0-9]*" $TAG.decide.4.err | tr -d ', ' | cut -d: -f2); b=$(grep -o "Collected : *[0-9]*" $TAG.decide.20.err | tr -d ', ' | cut -d: -f2)
echo "$TAG decide $(( (b - a) / 16000 ))"
