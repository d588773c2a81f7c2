# Where the b8192 Megatron step's extra time goes (issue 16): torch.profiler + cProfile at b128 and b8192, and a
# py-spy sample of the b8192 step loop. Repo root, $OUT set, wheelhouse/ built (with a py-spy wheel added).
source docs/results/h100/issue16/install.sh
mkdir -p /tmp/r
for b in 8192 128; do
  python3 benchmarks/profile_step.py --data-dir /tmp/mnist --out /tmp/r/p$b --accelerator gpu --batch $b \
    --warmup 10 --steps 20 > /tmp/r/p$b.log 2>&1; el "profile b$b rc=$? $(tail -1 /tmp/r/p$b.log)"
done
py-spy record --format raw -r 250 -o /tmp/r/pyspy-b8192.txt -- python3 benchmarks/step_runner.py megatron \
  --batch 8192 --steps 1500 --warmup 5 --accelerator gpu --data-dir /tmp/mnist --out /tmp/r/sr.json \
  --run-dir /tmp/r/srrun > /tmp/r/pyspy.log 2>&1; el "py-spy rc=$? $(tail -1 /tmp/r/pyspy.log)"
rm -rf /tmp/r/*/run /tmp/r/srrun
tar czf $OUT/profile-b8192.tgz -C /tmp/r .
el done
