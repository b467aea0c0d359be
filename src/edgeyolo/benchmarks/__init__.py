"""The longer measurements behind ``edgeyolo bench soak | mqtt | drift``.

They print numbers for people (docs/benchmarks.md); tests assert behaviour, never speed. The
arguments are defined in ``edgeyolo.commands.bench_tools``; each module here has ``main(args)``.
"""
