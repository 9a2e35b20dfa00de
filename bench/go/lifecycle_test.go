// Go peers for libctx's lifecycle figures (bench/ctx_bench.c, "Lifecycle/*"),
// which Go's own context/benchmark_test.go does not measure in isolation.
// Same workloads, same names; run with Go's suite by bench/run.sh.
package lifecycle

import (
	"context"
	"testing"
	"time"
)

type keyT int

const lifeKey keyT = 1

var sink interface{}

func BenchmarkLifecycle(b *testing.B) {
	// C: ctx_with_cancel(background) + ctx_cancel + ctx_release
	b.Run("WithCancelBackground", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			_, cancel := context.WithCancel(context.Background())
			cancel()
		}
	})
	// C: the same under a live cancellable parent (registration in its children)
	b.Run("WithCancelChild", func(b *testing.B) {
		parent, pcancel := context.WithCancel(context.Background())
		defer pcancel()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			_, cancel := context.WithCancel(parent)
			cancel()
		}
	})
	// C: ctx_with_timeout(background, CTX_HOUR) + ctx_cancel + ctx_release
	b.Run("WithTimeout", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			_, cancel := context.WithTimeout(context.Background(), time.Hour)
			cancel()
		}
	})
	// C: ctx_with_value(background, k, v) + ctx_value(k) + ctx_release
	b.Run("WithValue", func(b *testing.B) {
		var v interface{}
		for i := 0; i < b.N; i++ {
			v = context.WithValue(context.Background(), lifeKey, &v).Value(lifeKey)
		}
		sink = v
	})
}
