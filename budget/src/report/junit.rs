//! JUnit XML, for CI systems that show test results.

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

use super::{BudgetReport, Outcome};

impl BudgetReport {
    /// The report as JUnit XML: one test suite, one test case per route and
    /// budget (classname = route, name = budget); a budget over its limit or
    /// without enough samples is a failure. Needs the `junit` feature.
    ///
    /// ```
    /// let report = brisk_budget::BudgetLayer::new(brisk_budget::Budgets::new()).report();
    /// assert!(report.to_junit().contains("<testsuites"));
    /// ```
    pub fn to_junit(&self) -> String {
        let mut suite = TestSuite::new("performance budgets");
        for route in &self.routes {
            for check in &route.checks {
                let status = match check.outcome {
                    Outcome::Pass => TestCaseStatus::success(),
                    Outcome::Fail | Outcome::InsufficientSamples => {
                        let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
                        status.set_message(check.to_string());
                        status.set_type(match check.outcome {
                            Outcome::Fail => "over budget",
                            _ => "insufficient samples",
                        });
                        status
                    }
                };
                let mut case = TestCase::new(check.budget.as_str(), status);
                case.set_classname(route.route.as_str());
                case.set_system_out(check.to_string());
                suite.add_test_case(case);
            }
        }
        let mut report = Report::new("brisk-budget");
        report.add_test_suite(suite);
        report.to_string().expect("writing XML to a String cannot fail")
    }
}
