package main

// Published is one row of NAB's published scoreboard: normalised scores for
// the standard, reward_low_FP_rate and reward_low_FN_rate profiles.
type Published struct {
	Detector string     `json:"detector"`
	Scores   [3]float64 `json:"scores"` // in the order of Profiles
	Source   string     `json:"source"`
}

// scoreboardSource names where the scoreboard comes from.
const scoreboardSource = "NAB dataset README.md, \"Published scoreboard\": numenta/NAB results/final_results.json " +
	"at ea702d75cc2258d9d7dd35ca8e5e2539d71f3140 (NAB v1.0/1.1 scoring; most rows predate the January 2019 " +
	"switch from hill-climbing to the exhaustive threshold sweep this scorer does)"

// publishedScoreboard is copied from the table of the dataset README
// (shared/datasets/nab/README.md beside the repository); TestScoreboardMatchesREADME checks
// it against the file when the file is there.
var publishedScoreboard = []Published{
	{"perfect", [3]float64{100.0, 100.0, 100.0}, "final_results.json"},
	{"ARTime", [3]float64{74.85, 65.15, 80.36}, "final_results.json"},
	{"numenta (HTM, NuPIC 0.5.6)", [3]float64{70.10, 63.12, 74.32}, "final_results.json"},
	{"contextOSE (CAD OSE)", [3]float64{69.90, 66.98, 73.18}, "final_results.json"},
	{"htmjava", [3]float64{65.55, 53.26, 70.42}, "final_results.json"},
	{"numentaTM", [3]float64{64.55, 56.67, 69.19}, "final_results.json"},
	{"earthgeckoSkyline", [3]float64{58.20, 46.20, 63.80}, "final_results.json"},
	{"knncad (KNN-CAD)", [3]float64{57.99, 43.41, 64.81}, "final_results.json"},
	{"relativeEntropy", [3]float64{54.64, 47.60, 58.84}, "final_results.json"},
	{"randomCutForest (AWS)", [3]float64{51.72, 38.36, 59.75}, "final_results.json"},
	{"twitterADVec", [3]float64{47.06, 33.61, 53.50}, "final_results.json"},
	{"windowedGaussian", [3]float64{39.65, 20.87, 47.41}, "final_results.json"},
	{"skyline (Etsy)", [3]float64{35.69, 27.08, 44.48}, "final_results.json"},
	{"bayesChangePt", [3]float64{17.7, 3.2, 32.2}, "NAB README"},
	{"expose", [3]float64{16.44, 3.19, 26.92}, "final_results.json"},
	{"random", [3]float64{16.83, 5.76, 25.88}, "final_results.json"},
	{"null", [3]float64{0.0, 0.0, 0.0}, "final_results.json"},
}

// randomReference are the other published figures of NAB's random detector
// quoted in the dataset README's notes on the scoreboard.
var randomReference = []Published{
	{"random, seeds averaged", [3]float64{11.0, 1.2, 19.5}, "NAB README (mean over seeds)"},
	{"random, exhaustive sweep", [3]float64{17.66, 7.48, 27.57}, "dataset README (results/random re-scored with the exhaustive sweep)"},
}
