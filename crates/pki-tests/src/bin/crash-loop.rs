//! `crash-loop ROUNDS [SEED]`: the crash loop of `pki serve` (`pki_tests::crash_loop`). Prints a
//! line per round and `rounds N, acknowledged A, lost L`; exits 1 on any loss.

fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: crash-loop ROUNDS [SEED]";
    let rounds: usize = match args.next().map(|a| a.parse()) {
        Some(Ok(n)) if n > 0 => n,
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    };
    let seed = match args.next().map(|a| a.parse::<u64>()) {
        Some(Ok(s)) => s,
        Some(Err(_)) => {
            eprintln!("{usage}: SEED is a number");
            std::process::exit(2);
        }
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
    };
    println!("crash loop: {rounds} rounds, seed {seed}");
    let report = pki_tests::crash_loop::run_loop(rounds, seed, "", &mut std::io::stdout());
    println!("{}", report.summary());
    if !report.lost.is_empty() {
        std::process::exit(1);
    }
}
