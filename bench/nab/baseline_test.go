package main

import "testing"

func TestPyRandomMatchesCPython(t *testing.T) {
	// python3 -c 'import random; random.seed(S); v = [random.random() for _ in range(1000)]; print(v[0], v[1], v[999])'
	// The 1000th value needs 2000 outputs: three twists of the 624-word state.
	f := func(seed uint32, want0, want1, want999 float64) {
		t.Helper()
		r := newPyRandom(seed)
		var got [1000]float64
		for i := range got {
			got[i] = r.Float64()
		}
		if got[0] != want0 || got[1] != want1 || got[999] != want999 {
			t.Errorf("seed %d: got %v %v … %v, want %v %v … %v", seed, got[0], got[1], got[999], want0, want1, want999)
		}
	}
	f(0, 0.8444218515250481, 0.7579544029403025, 0.4804125346981437)
	f(1, 0.13436424411240122, 0.8474337369372327, 0.7062615472551386)
	// NAB's random detector: numenta/NAB results/random/*.csv start with
	// 0.639426798458, 0.0250107552227 in every file.
	f(42, 0.6394267984578837, 0.025010755222666936, 0.8554501933059546)
}

func TestBaselineScores(t *testing.T) {
	a := synthFile(t, "cat/a.csv", 40, [][2]int{{20, 24}})
	b := synthFile(t, "cat/b.csv", 30, nil)
	c := corpusOf(a, b)
	r, err := baselineScores("random", c, 42)
	if err != nil {
		t.Fatal(err)
	}
	// Reseeded for every file, as NAB's initialize() does.
	for k, s := range r {
		if s[0] != 0.6394267984578837 || s[1] != 0.025010755222666936 || len(s) != len(c.Files[k].Times) {
			t.Errorf("file %d: got %v %v (%d rows)", k, s[0], s[1], len(s))
		}
	}
	n, err := baselineScores("null", c, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range n {
		for _, v := range s {
			if v != 0.5 {
				t.Fatalf("null: got %v, want 0.5", v)
			}
		}
	}
	if _, err := baselineScores("oracle", c, 0); err == nil || err.Error() != `unknown baseline "oracle": want null or random` {
		t.Errorf("unknown baseline: got %v", err)
	}
}
