//! `soak MINUTES [CALIBRATE_SECS] [FRACTION]`: the soak of `pki serve` (`pki_tests::soak`). Prints
//! the measured capacity, one block per minute (per class: operations, errors, p50, p99; the
//! server's RSS) and a verdict; exits 1 on any error or on memory growth over the last half.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: soak MINUTES [CALIBRATE_SECS (30)] [FRACTION (0.8)]";
    let minutes: u64 = match args.first().map(|a| a.parse()) {
        Some(Ok(n)) if n > 0 => n,
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    };
    let calibrate: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(30);
    let fraction: f64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(0.8);
    println!(
        "soak: {minutes} minutes at {:.0} % of the capacity measured for {calibrate} s",
        fraction * 100.0
    );
    let report = pki_tests::soak::run_soak(
        minutes,
        std::time::Duration::from_secs(calibrate),
        fraction,
        &mut std::io::stdout(),
    );
    if report.errors > 0 || report.rss_grew {
        std::process::exit(1);
    }
}
