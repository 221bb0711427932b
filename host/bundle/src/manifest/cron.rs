//! Structural check of five-field cron expressions (`minute hour day-of-month month
//! day-of-week`).

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    /// Value of the first entry of `names`.
    first_name_value: u32,
}

const FIELDS: [Field; 5] = [
    Field {
        name: "minute",
        min: 0,
        max: 59,
        names: &[],
        first_name_value: 0,
    },
    Field {
        name: "hour",
        min: 0,
        max: 23,
        names: &[],
        first_name_value: 0,
    },
    Field {
        name: "day of month",
        min: 1,
        max: 31,
        names: &[],
        first_name_value: 0,
    },
    Field {
        name: "month",
        min: 1,
        max: 12,
        names: &MONTHS,
        first_name_value: 1,
    },
    // 7 is Sunday as well, as in most cron implementations.
    Field {
        name: "day of week",
        min: 0,
        max: 7,
        names: &DAYS,
        first_name_value: 0,
    },
];

/// Checks a five-field cron expression. Each field is `*` or a comma-separated list of
/// values or `a-b` ranges, each optionally followed by `/step`; months and days of the week
/// may be written as three-letter English names.
pub(crate) fn check_cron(expr: &str) -> Result<(), String> {
    let parts: Vec<&str> = expr.split_whitespace().collect();
    if parts.len() != FIELDS.len() {
        return Err(format!(
            "a cron expression has 5 fields (minute hour day-of-month month day-of-week), found {}",
            parts.len()
        ));
    }
    for (part, field) in parts.iter().zip(FIELDS.iter()) {
        check_field(part, field).map_err(|why| format!("{} field `{part}`: {why}", field.name))?;
    }
    Ok(())
}

fn check_field(part: &str, field: &Field) -> Result<(), String> {
    for item in part.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => (range, Some(step)),
            None => (item, None),
        };
        if let Some(step) = step {
            match step.parse::<u32>() {
                Ok(step) if step >= 1 && step <= field.max.max(1) => {}
                _ => {
                    return Err(format!(
                        "step `{step}` must be a number from 1 to {}",
                        field.max
                    ));
                }
            }
        }
        if range == "*" {
            continue;
        }
        let (low, high) = match range.split_once('-') {
            Some((low, high)) => (value(low, field)?, Some(value(high, field)?)),
            None => (value(range, field)?, None),
        };
        if let Some(high) = high
            && high < low
        {
            return Err(format!("range `{range}` ends before it starts"));
        }
    }
    Ok(())
}

fn value(text: &str, field: &Field) -> Result<u32, String> {
    if let Some(index) = field
        .names
        .iter()
        .position(|name| name.eq_ignore_ascii_case(text))
    {
        return Ok(field.first_name_value + index as u32);
    }
    match text.parse::<u32>() {
        Ok(v)
            if (field.min..=field.max).contains(&v) && text.bytes().all(|b| b.is_ascii_digit()) =>
        {
            Ok(v)
        }
        _ => Err(format!(
            "`{text}` is not a value from {} to {}",
            field.min, field.max
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::check_cron;

    #[test]
    fn accepts_common_expressions() {
        for ok in [
            "0 * * * *",
            "*/15 * * * *",
            "0 9-17 * * MON-FRI",
            "30 2 1,15 * *",
            "0 0 1 jan *",
            "0 0 * * 7",
            "5-55/10 * * * *",
        ] {
            assert!(check_cron(ok).is_ok(), "{ok}: {:?}", check_cron(ok));
        }
    }

    #[test]
    fn refuses_malformed_expressions() {
        for bad in [
            "",
            "* * * *",
            "0 * * * * *",
            "60 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "* * * 13 *",
            "* * * * 8",
            "*/0 * * * *",
            "5-1 * * * *",
            "a * * * *",
            "+5 * * * *",
            "1,,2 * * * *",
            "@hourly",
        ] {
            assert!(check_cron(bad).is_err(), "{bad} should be refused");
        }
        let err = check_cron("61 * * * *").unwrap_err();
        assert!(err.contains("minute field `61`"), "{err}");
    }
}
