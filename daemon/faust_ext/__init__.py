"""Where gepa-stream extends or replaces parts of Faust, each for a measured reason (docs/faust.md):
bulk changelog replay (`recovery`), batched table writes (`table_batch`), short fetch waits
(`transport`) and a bounded stop (`worker`)."""
