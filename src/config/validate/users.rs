//! Checks of who may run what: `users` (unique names, a password each, valid command
//! names and key globs) and `deny_commands`.

use super::{CommandAccess, Config, Problems};
use std::collections::HashMap;

/// `users` and `deny_commands`.
pub(super) fn check(p: &mut Problems, cfg: &Config) {
    let mut users: HashMap<&str, usize> = HashMap::new();
    for (i, u) in cfg.users.iter().enumerate() {
        let at = format!("users[{i}]");
        if u.name.is_empty() {
            p.add(format!("{at}.name"), format!("`{at}.name` is empty: give the user a name (`default` is the one AUTH <password> uses)"));
        } else if let Some(first) = users.get(u.name.as_str()) {
            p.add(
                format!("{at}.name"),
                format!("`{at}.name` repeats the user {:?} (already users[{first}]): give each user once", u.name),
            );
        } else {
            users.insert(&u.name, i);
        }
        if u.password.is_empty() {
            p.add(
                format!("{at}.password"),
                format!(
                    "`{at}.password` is empty: give a password (e.g. password: ${{APP_PASSWORD}}), or remove the user; with no users at all, no authentication is required"
                ),
            );
        }
        if let CommandAccess::List(list) = &u.commands {
            for (c, name) in list.iter().enumerate() {
                p.command(&format!("{at}.commands[{c}]"), name);
            }
        }
        for (k, pattern) in u.keys.iter().enumerate() {
            p.glob(&format!("{at}.keys[{k}]"), pattern);
        }
    }

    for (i, name) in cfg.deny_commands.iter().enumerate() {
        p.command(&format!("deny_commands[{i}]"), name);
    }
}
