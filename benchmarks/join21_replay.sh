#!/bin/bash
# benchmarks/join21_replay.sh SRC TAG WHAT (SRC: a src folder for PYTHONPATH; outputs in the current folder)
SRC=$1; TAG=$2; WHAT=$3
for n in 4 12; do
PYTHONPATH=$SRC PYTHONHASHSEED=0 OPENBLAS_NUM_THREADS=1 valgrind --tool=callgrind --toggle-collect=_operator_call --callgrind-out-file=$TAG.$WHAT.$n.out ${PYTHON:-python} $(dirname "$0")/join21_replay.py $n $WHAT > /dev/null 2>$TAG.$WHAT.$n.err
done
a=$(grep -o "Collected : *[0-9]*" $TAG.$WHAT.4.err | tr -d ', ' | cut -d: -f2); b=$(grep -o "Collected : *[0-9]*" $TAG.$WHAT.12.err | tr -d ', ' | cut -d: -f2)
echo "$TAG $WHAT $(( (b - a) / 8000 ))"
