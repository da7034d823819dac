//! Prints the Prometheus alerting rules for a budgets file, for `rule_files`:
//!
//! `cargo run -p brisk-budget --example alert_rules -- performance-budgets.yml > budget-alerts.yml`

use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: alert_rules <performance-budgets.yml|.toml|.json> [rate window, default 5m]");
        return ExitCode::from(2);
    };
    let window = std::env::args().nth(2).unwrap_or_else(|| "5m".to_owned());
    match brisk_budget::Budgets::from_path(&path) {
        Ok(budgets) => {
            print!("{}", budgets.alert_rules().rate_window(window).to_yaml());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{path}: {e}");
            ExitCode::FAILURE
        }
    }
}
