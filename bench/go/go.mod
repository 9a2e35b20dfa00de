module libctx.bench/lifecycle

go 1.19
