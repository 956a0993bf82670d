# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_userdrop_global_optspecs
    string join \n watch= once poll= rescan= settle= archive= archive-after= delete-after= token= token-file= max-file-size= lang= types= step-users= metrics-file= config= db= store= instance= cache-mb= log-level= log-format= h/help V/version
end

function __fish_userdrop_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_userdrop_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_userdrop_using_subcommand
    set -l cmd (__fish_userdrop_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c userdrop -n "__fish_userdrop_needs_command" -l watch -d 'The inbox folder' -r -F
complete -c userdrop -n "__fish_userdrop_needs_command" -l poll -d 'Poll the inbox every MS milliseconds instead of using inotify events (for NFS/SMB/FUSE mounts, where events do not arrive)' -r
complete -c userdrop -n "__fish_userdrop_needs_command" -l rescan -d 'Full rescan of the inbox every SECS seconds, in both modes, so that no file is missed after an event-queue overflow' -r
complete -c userdrop -n "__fish_userdrop_needs_command" -l settle -d 'How long a file that does not parse must stay unchanged before it gets ERROR, in milliseconds (a partial upload is waited for until then)' -r
complete -c userdrop -n "__fish_userdrop_needs_command" -l archive -d 'Move each request and its response, once both are older than --archive-after, into DIR/YYYY-MM-DD/ (the day the response was written, UTC), the request first. DIR is created (0750) if missing; it must be outside the inbox and on its file system and mount' -r -F
complete -c userdrop -n "__fish_userdrop_needs_command" -l archive-after -d 'How old a request and its response must both be before --archive moves them: a whole number and a unit, s, m, h or d (90s, 15m, 12h, 7d)' -r
complete -c userdrop -n "__fish_userdrop_needs_command" -l delete-after -d 'Delete each request and its response once both are older than this (90s, 15m, 12h, 7d), the request first; the store\'s history keeps their record. Not with --archive' -r
complete -c userdrop -n "__fish_userdrop_needs_command" -l token -d 'A token requests must carry (repeatable). With none, `token` is optional and ignored' -r
complete -c userdrop -n "__fish_userdrop_needs_command" -l token-file -d 'A file of tokens, one a line (blank lines and lines starting with # are ignored), added to --token: it keeps them out of the process list. Read at start and again on SIGHUP' -r -F
complete -c userdrop -n "__fish_userdrop_needs_command" -l max-file-size -d 'Files larger than this are rejected with ERROR without being read' -r
complete -c userdrop -n "__fish_userdrop_needs_command" -l lang -d 'Language of the response messages' -r -f -a "en\t'English'
uk\t'Ukrainian (українська)'
ru\t'Russian (русский)'"
complete -c userdrop -n "__fish_userdrop_needs_command" -l types -d 'How field types are read: strict as SPEC §1\'s table, or lenient to take the forms PHP and ERP exports write ("3", 0/1, [], 31.12.2025, 00380...)' -r -f -a "strict\t'Each field of the JSON type SPEC §1\'s table gives it: "3" is not a number'
lenient\t'Also the forms PHP scripts and ERP exports write: numbers as strings, booleans as 0/1, [] for no discount card, DD.MM.YYYY dates and dates with a time, 00 for a phone\'s +'"
complete -c userdrop -n "__fish_userdrop_needs_command" -l step-users -d 'Users written per atomic step (a step also ends after 64 times as many were judged, for files mostly unchanged); bounds memory and what a crash can cut short' -r
complete -c userdrop -n "__fish_userdrop_needs_command" -l metrics-file -d 'Write Prometheus metrics (text format, for node_exporter\'s textfile collector) to this file after every processed file (run and import)' -r -F
complete -c userdrop -n "__fish_userdrop_needs_command" -l config -d 'A TOML config file: a key for every option below (flags and USERDROP_* variables take precedence over it)' -r -F
complete -c userdrop -n "__fish_userdrop_needs_command" -l db -d 'The store\'s folder (created if missing; keep it outside the inbox)' -r -F
complete -c userdrop -n "__fish_userdrop_needs_command" -l store -d 'The store in PostgreSQL instead of sled in --db (SPEC §8): postgres://USER@HOST/DB, for several daemons on several hosts. --db then holds only this host\'s private copies of big requests' -r
complete -c userdrop -n "__fish_userdrop_needs_command" -l instance -d 'The name this host\'s requests are known by on a PostgreSQL store: one daemon per instance [default: the host name]' -r
complete -c userdrop -n "__fish_userdrop_needs_command" -l cache-mb -d 'sled\'s page cache, in MiB (at least 1)' -r
complete -c userdrop -n "__fish_userdrop_needs_command" -l log-level -d 'Log level for stderr (overridden by RUST_LOG)' -r -f -a "error\t''
warn\t''
info\t''
debug\t''
trace\t''
off\t''"
complete -c userdrop -n "__fish_userdrop_needs_command" -l log-format -d 'Log format for stderr' -r -f -a "text\t''
json\t''"
complete -c userdrop -n "__fish_userdrop_needs_command" -l once -d 'Process the requests waiting in the inbox, then exit'
complete -c userdrop -n "__fish_userdrop_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c userdrop -n "__fish_userdrop_needs_command" -s V -l version -d 'Print version'
complete -c userdrop -n "__fish_userdrop_needs_command" -f -a "run" -d 'Watch the inbox and process every request dropped there (the default command)'
complete -c userdrop -n "__fish_userdrop_needs_command" -f -a "import" -d 'Apply these request files now; write each response beside its file'
complete -c userdrop -n "__fish_userdrop_needs_command" -f -a "check" -d 'Validate files against the store and print the would-be responses; change nothing'
complete -c userdrop -n "__fish_userdrop_needs_command" -f -a "get" -d 'Print the stored user with this email as JSON; exit 1 if there is none'
complete -c userdrop -n "__fish_userdrop_needs_command" -f -a "export" -d 'Print every stored user, sorted by email'
complete -c userdrop -n "__fish_userdrop_needs_command" -f -a "stats" -d 'Count the stored users and the processed files by status'
complete -c userdrop -n "__fish_userdrop_needs_command" -f -a "delete" -d 'Erase these users from the store (the right to erasure); exit 1 if none was stored. Names the files in the inbox that still mention them'
complete -c userdrop -n "__fish_userdrop_needs_command" -f -a "backup" -d 'Write a consistent, full snapshot of the store (users with their meta, the file history, the counters) to FILE; works while the daemon runs'
complete -c userdrop -n "__fish_userdrop_needs_command" -f -a "restore" -d 'Load a backup into an empty store'
complete -c userdrop -n "__fish_userdrop_needs_command" -f -a "schema" -d 'Print a JSON Schema (draft 2020-12) of the request file, for editors and CI'
complete -c userdrop -n "__fish_userdrop_needs_command" -f -a "completions" -d 'Print a shell completion script'
complete -c userdrop -n "__fish_userdrop_needs_command" -f -a "man" -d 'Print the man page (roff)'
complete -c userdrop -n "__fish_userdrop_needs_command" -f -a "config" -d 'Print the effective configuration: every setting, its value and where it comes from (flag, env, file or default). Tokens are counted, never shown'
complete -c userdrop -n "__fish_userdrop_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c userdrop -n "__fish_userdrop_using_subcommand run" -l watch -d 'The inbox folder' -r -F
complete -c userdrop -n "__fish_userdrop_using_subcommand run" -l poll -d 'Poll the inbox every MS milliseconds instead of using inotify events (for NFS/SMB/FUSE mounts, where events do not arrive)' -r
complete -c userdrop -n "__fish_userdrop_using_subcommand run" -l rescan -d 'Full rescan of the inbox every SECS seconds, in both modes, so that no file is missed after an event-queue overflow' -r
complete -c userdrop -n "__fish_userdrop_using_subcommand run" -l settle -d 'How long a file that does not parse must stay unchanged before it gets ERROR, in milliseconds (a partial upload is waited for until then)' -r
complete -c userdrop -n "__fish_userdrop_using_subcommand run" -l archive -d 'Move each request and its response, once both are older than --archive-after, into DIR/YYYY-MM-DD/ (the day the response was written, UTC), the request first. DIR is created (0750) if missing; it must be outside the inbox and on its file system and mount' -r -F
complete -c userdrop -n "__fish_userdrop_using_subcommand run" -l archive-after -d 'How old a request and its response must both be before --archive moves them: a whole number and a unit, s, m, h or d (90s, 15m, 12h, 7d)' -r
complete -c userdrop -n "__fish_userdrop_using_subcommand run" -l delete-after -d 'Delete each request and its response once both are older than this (90s, 15m, 12h, 7d), the request first; the store\'s history keeps their record. Not with --archive' -r
complete -c userdrop -n "__fish_userdrop_using_subcommand run" -l token -d 'A token requests must carry (repeatable). With none, `token` is optional and ignored' -r
complete -c userdrop -n "__fish_userdrop_using_subcommand run" -l token-file -d 'A file of tokens, one a line (blank lines and lines starting with # are ignored), added to --token: it keeps them out of the process list. Read at start and again on SIGHUP' -r -F
complete -c userdrop -n "__fish_userdrop_using_subcommand run" -l max-file-size -d 'Files larger than this are rejected with ERROR without being read' -r
complete -c userdrop -n "__fish_userdrop_using_subcommand run" -l lang -d 'Language of the response messages' -r -f -a "en\t'English'
uk\t'Ukrainian (українська)'
ru\t'Russian (русский)'"
complete -c userdrop -n "__fish_userdrop_using_subcommand run" -l types -d 'How field types are read: strict as SPEC §1\'s table, or lenient to take the forms PHP and ERP exports write ("3", 0/1, [], 31.12.2025, 00380...)' -r -f -a "strict\t'Each field of the JSON type SPEC §1\'s table gives it: "3" is not a number'
lenient\t'Also the forms PHP scripts and ERP exports write: numbers as strings, booleans as 0/1, [] for no discount card, DD.MM.YYYY dates and dates with a time, 00 for a phone\'s +'"
complete -c userdrop -n "__fish_userdrop_using_subcommand run" -l step-users -d 'Users written per atomic step (a step also ends after 64 times as many were judged, for files mostly unchanged); bounds memory and what a crash can cut short' -r
complete -c userdrop -n "__fish_userdrop_using_subcommand run" -l metrics-file -d 'Write Prometheus metrics (text format, for node_exporter\'s textfile collector) to this file after every processed file (run and import)' -r -F
complete -c userdrop -n "__fish_userdrop_using_subcommand run" -l config -d 'A TOML config file: a key for every option below (flags and USERDROP_* variables take precedence over it)' -r -F
complete -c userdrop -n "__fish_userdrop_using_subcommand run" -l db -d 'The store\'s folder (created if missing; keep it outside the inbox)' -r -F
complete -c userdrop -n "__fish_userdrop_using_subcommand run" -l store -d 'The store in PostgreSQL instead of sled in --db (SPEC §8): postgres://USER@HOST/DB, for several daemons on several hosts. --db then holds only this host\'s private copies of big requests' -r
complete -c userdrop -n "__fish_userdrop_using_subcommand run" -l instance -d 'The name this host\'s requests are known by on a PostgreSQL store: one daemon per instance [default: the host name]' -r
complete -c userdrop -n "__fish_userdrop_using_subcommand run" -l cache-mb -d 'sled\'s page cache, in MiB (at least 1)' -r
complete -c userdrop -n "__fish_userdrop_using_subcommand run" -l log-level -d 'Log level for stderr (overridden by RUST_LOG)' -r -f -a "error\t''
warn\t''
info\t''
debug\t''
trace\t''
off\t''"
complete -c userdrop -n "__fish_userdrop_using_subcommand run" -l log-format -d 'Log format for stderr' -r -f -a "text\t''
json\t''"
complete -c userdrop -n "__fish_userdrop_using_subcommand run" -l once -d 'Process the requests waiting in the inbox, then exit'
complete -c userdrop -n "__fish_userdrop_using_subcommand run" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c userdrop -n "__fish_userdrop_using_subcommand import" -l token -d 'A token requests must carry (repeatable). With none, `token` is optional and ignored' -r
complete -c userdrop -n "__fish_userdrop_using_subcommand import" -l token-file -d 'A file of tokens, one a line (blank lines and lines starting with # are ignored), added to --token: it keeps them out of the process list. Read at start and again on SIGHUP' -r -F
complete -c userdrop -n "__fish_userdrop_using_subcommand import" -l max-file-size -d 'Files larger than this are rejected with ERROR without being read' -r
complete -c userdrop -n "__fish_userdrop_using_subcommand import" -l lang -d 'Language of the response messages' -r -f -a "en\t'English'
uk\t'Ukrainian (українська)'
ru\t'Russian (русский)'"
complete -c userdrop -n "__fish_userdrop_using_subcommand import" -l types -d 'How field types are read: strict as SPEC §1\'s table, or lenient to take the forms PHP and ERP exports write ("3", 0/1, [], 31.12.2025, 00380...)' -r -f -a "strict\t'Each field of the JSON type SPEC §1\'s table gives it: "3" is not a number'
lenient\t'Also the forms PHP scripts and ERP exports write: numbers as strings, booleans as 0/1, [] for no discount card, DD.MM.YYYY dates and dates with a time, 00 for a phone\'s +'"
complete -c userdrop -n "__fish_userdrop_using_subcommand import" -l step-users -d 'Users written per atomic step (a step also ends after 64 times as many were judged, for files mostly unchanged); bounds memory and what a crash can cut short' -r
complete -c userdrop -n "__fish_userdrop_using_subcommand import" -l metrics-file -d 'Write Prometheus metrics (text format, for node_exporter\'s textfile collector) to this file after every processed file (run and import)' -r -F
complete -c userdrop -n "__fish_userdrop_using_subcommand import" -l config -d 'A TOML config file: a key for every option below (flags and USERDROP_* variables take precedence over it)' -r -F
complete -c userdrop -n "__fish_userdrop_using_subcommand import" -l db -d 'The store\'s folder (created if missing; keep it outside the inbox)' -r -F
complete -c userdrop -n "__fish_userdrop_using_subcommand import" -l store -d 'The store in PostgreSQL instead of sled in --db (SPEC §8): postgres://USER@HOST/DB, for several daemons on several hosts. --db then holds only this host\'s private copies of big requests' -r
complete -c userdrop -n "__fish_userdrop_using_subcommand import" -l instance -d 'The name this host\'s requests are known by on a PostgreSQL store: one daemon per instance [default: the host name]' -r
complete -c userdrop -n "__fish_userdrop_using_subcommand import" -l cache-mb -d 'sled\'s page cache, in MiB (at least 1)' -r
complete -c userdrop -n "__fish_userdrop_using_subcommand import" -l log-level -d 'Log level for stderr (overridden by RUST_LOG)' -r -f -a "error\t''
warn\t''
info\t''
debug\t''
trace\t''
off\t''"
complete -c userdrop -n "__fish_userdrop_using_subcommand import" -l log-format -d 'Log format for stderr' -r -f -a "text\t''
json\t''"
complete -c userdrop -n "__fish_userdrop_using_subcommand import" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c userdrop -n "__fish_userdrop_using_subcommand check" -l token -d 'A token requests must carry (repeatable). With none, `token` is optional and ignored' -r
complete -c userdrop -n "__fish_userdrop_using_subcommand check" -l token-file -d 'A file of tokens, one a line (blank lines and lines starting with # are ignored), added to --token: it keeps them out of the process list. Read at start and again on SIGHUP' -r -F
complete -c userdrop -n "__fish_userdrop_using_subcommand check" -l max-file-size -d 'Files larger than this are rejected with ERROR without being read' -r
complete -c userdrop -n "__fish_userdrop_using_subcommand check" -l lang -d 'Language of the response messages' -r -f -a "en\t'English'
uk\t'Ukrainian (українська)'
ru\t'Russian (русский)'"
complete -c userdrop -n "__fish_userdrop_using_subcommand check" -l types -d 'How field types are read: strict as SPEC §1\'s table, or lenient to take the forms PHP and ERP exports write ("3", 0/1, [], 31.12.2025, 00380...)' -r -f -a "strict\t'Each field of the JSON type SPEC §1\'s table gives it: "3" is not a number'
lenient\t'Also the forms PHP scripts and ERP exports write: numbers as strings, booleans as 0/1, [] for no discount card, DD.MM.YYYY dates and dates with a time, 00 for a phone\'s +'"
complete -c userdrop -n "__fish_userdrop_using_subcommand check" -l config -d 'A TOML config file: a key for every option below (flags and USERDROP_* variables take precedence over it)' -r -F
complete -c userdrop -n "__fish_userdrop_using_subcommand check" -l db -d 'The store\'s folder (created if missing; keep it outside the inbox)' -r -F
complete -c userdrop -n "__fish_userdrop_using_subcommand check" -l store -d 'The store in PostgreSQL instead of sled in --db (SPEC §8): postgres://USER@HOST/DB, for several daemons on several hosts. --db then holds only this host\'s private copies of big requests' -r
complete -c userdrop -n "__fish_userdrop_using_subcommand check" -l instance -d 'The name this host\'s requests are known by on a PostgreSQL store: one daemon per instance [default: the host name]' -r
complete -c userdrop -n "__fish_userdrop_using_subcommand check" -l cache-mb -d 'sled\'s page cache, in MiB (at least 1)' -r
complete -c userdrop -n "__fish_userdrop_using_subcommand check" -l log-level -d 'Log level for stderr (overridden by RUST_LOG)' -r -f -a "error\t''
warn\t''
info\t''
debug\t''
trace\t''
off\t''"
complete -c userdrop -n "__fish_userdrop_using_subcommand check" -l log-format -d 'Log format for stderr' -r -f -a "text\t''
json\t''"
complete -c userdrop -n "__fish_userdrop_using_subcommand check" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c userdrop -n "__fish_userdrop_using_subcommand get" -l config -d 'A TOML config file: a key for every option below (flags and USERDROP_* variables take precedence over it)' -r -F
complete -c userdrop -n "__fish_userdrop_using_subcommand get" -l db -d 'The store\'s folder (created if missing; keep it outside the inbox)' -r -F
complete -c userdrop -n "__fish_userdrop_using_subcommand get" -l store -d 'The store in PostgreSQL instead of sled in --db (SPEC §8): postgres://USER@HOST/DB, for several daemons on several hosts. --db then holds only this host\'s private copies of big requests' -r
complete -c userdrop -n "__fish_userdrop_using_subcommand get" -l instance -d 'The name this host\'s requests are known by on a PostgreSQL store: one daemon per instance [default: the host name]' -r
complete -c userdrop -n "__fish_userdrop_using_subcommand get" -l cache-mb -d 'sled\'s page cache, in MiB (at least 1)' -r
complete -c userdrop -n "__fish_userdrop_using_subcommand get" -l log-level -d 'Log level for stderr (overridden by RUST_LOG)' -r -f -a "error\t''
warn\t''
info\t''
debug\t''
trace\t''
off\t''"
complete -c userdrop -n "__fish_userdrop_using_subcommand get" -l log-format -d 'Log format for stderr' -r -f -a "text\t''
json\t''"
complete -c userdrop -n "__fish_userdrop_using_subcommand get" -s h -l help -d 'Print help'
complete -c userdrop -n "__fish_userdrop_using_subcommand export" -l format -d 'json: a users/import request that re-imports to the same store; ndjson: one full record per line; csv: a spreadsheet' -r -f -a "json\t'A users/import request, `{"users": [...]}`, that re-imports to the same store'
ndjson\t'One stored record per line, with `created_at`, `updated_at` and `source_file`'
csv\t'A spreadsheet: one row per user, a header row first'"
complete -c userdrop -n "__fish_userdrop_using_subcommand export" -l config -d 'A TOML config file: a key for every option below (flags and USERDROP_* variables take precedence over it)' -r -F
complete -c userdrop -n "__fish_userdrop_using_subcommand export" -l db -d 'The store\'s folder (created if missing; keep it outside the inbox)' -r -F
complete -c userdrop -n "__fish_userdrop_using_subcommand export" -l store -d 'The store in PostgreSQL instead of sled in --db (SPEC §8): postgres://USER@HOST/DB, for several daemons on several hosts. --db then holds only this host\'s private copies of big requests' -r
complete -c userdrop -n "__fish_userdrop_using_subcommand export" -l instance -d 'The name this host\'s requests are known by on a PostgreSQL store: one daemon per instance [default: the host name]' -r
complete -c userdrop -n "__fish_userdrop_using_subcommand export" -l cache-mb -d 'sled\'s page cache, in MiB (at least 1)' -r
complete -c userdrop -n "__fish_userdrop_using_subcommand export" -l log-level -d 'Log level for stderr (overridden by RUST_LOG)' -r -f -a "error\t''
warn\t''
info\t''
debug\t''
trace\t''
off\t''"
complete -c userdrop -n "__fish_userdrop_using_subcommand export" -l log-format -d 'Log format for stderr' -r -f -a "text\t''
json\t''"
complete -c userdrop -n "__fish_userdrop_using_subcommand export" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c userdrop -n "__fish_userdrop_using_subcommand stats" -l config -d 'A TOML config file: a key for every option below (flags and USERDROP_* variables take precedence over it)' -r -F
complete -c userdrop -n "__fish_userdrop_using_subcommand stats" -l db -d 'The store\'s folder (created if missing; keep it outside the inbox)' -r -F
complete -c userdrop -n "__fish_userdrop_using_subcommand stats" -l store -d 'The store in PostgreSQL instead of sled in --db (SPEC §8): postgres://USER@HOST/DB, for several daemons on several hosts. --db then holds only this host\'s private copies of big requests' -r
complete -c userdrop -n "__fish_userdrop_using_subcommand stats" -l instance -d 'The name this host\'s requests are known by on a PostgreSQL store: one daemon per instance [default: the host name]' -r
complete -c userdrop -n "__fish_userdrop_using_subcommand stats" -l cache-mb -d 'sled\'s page cache, in MiB (at least 1)' -r
complete -c userdrop -n "__fish_userdrop_using_subcommand stats" -l log-level -d 'Log level for stderr (overridden by RUST_LOG)' -r -f -a "error\t''
warn\t''
info\t''
debug\t''
trace\t''
off\t''"
complete -c userdrop -n "__fish_userdrop_using_subcommand stats" -l log-format -d 'Log format for stderr' -r -f -a "text\t''
json\t''"
complete -c userdrop -n "__fish_userdrop_using_subcommand stats" -l json -d 'Print JSON instead of a table'
complete -c userdrop -n "__fish_userdrop_using_subcommand stats" -s h -l help -d 'Print help'
complete -c userdrop -n "__fish_userdrop_using_subcommand delete" -l watch -d 'The inbox, searched for request and response files that still mention them' -r -F
complete -c userdrop -n "__fish_userdrop_using_subcommand delete" -l archive -d 'The retention archive, searched too (its day folders)' -r -F
complete -c userdrop -n "__fish_userdrop_using_subcommand delete" -l config -d 'A TOML config file: a key for every option below (flags and USERDROP_* variables take precedence over it)' -r -F
complete -c userdrop -n "__fish_userdrop_using_subcommand delete" -l db -d 'The store\'s folder (created if missing; keep it outside the inbox)' -r -F
complete -c userdrop -n "__fish_userdrop_using_subcommand delete" -l store -d 'The store in PostgreSQL instead of sled in --db (SPEC §8): postgres://USER@HOST/DB, for several daemons on several hosts. --db then holds only this host\'s private copies of big requests' -r
complete -c userdrop -n "__fish_userdrop_using_subcommand delete" -l instance -d 'The name this host\'s requests are known by on a PostgreSQL store: one daemon per instance [default: the host name]' -r
complete -c userdrop -n "__fish_userdrop_using_subcommand delete" -l cache-mb -d 'sled\'s page cache, in MiB (at least 1)' -r
complete -c userdrop -n "__fish_userdrop_using_subcommand delete" -l log-level -d 'Log level for stderr (overridden by RUST_LOG)' -r -f -a "error\t''
warn\t''
info\t''
debug\t''
trace\t''
off\t''"
complete -c userdrop -n "__fish_userdrop_using_subcommand delete" -l log-format -d 'Log format for stderr' -r -f -a "text\t''
json\t''"
complete -c userdrop -n "__fish_userdrop_using_subcommand delete" -l purge-files -d 'Also remove each request that holds only these users, and its response (the request first); files that mention anyone else are only named'
complete -c userdrop -n "__fish_userdrop_using_subcommand delete" -s h -l help -d 'Print help'
complete -c userdrop -n "__fish_userdrop_using_subcommand backup" -l config -d 'A TOML config file: a key for every option below (flags and USERDROP_* variables take precedence over it)' -r -F
complete -c userdrop -n "__fish_userdrop_using_subcommand backup" -l db -d 'The store\'s folder (created if missing; keep it outside the inbox)' -r -F
complete -c userdrop -n "__fish_userdrop_using_subcommand backup" -l store -d 'The store in PostgreSQL instead of sled in --db (SPEC §8): postgres://USER@HOST/DB, for several daemons on several hosts. --db then holds only this host\'s private copies of big requests' -r
complete -c userdrop -n "__fish_userdrop_using_subcommand backup" -l instance -d 'The name this host\'s requests are known by on a PostgreSQL store: one daemon per instance [default: the host name]' -r
complete -c userdrop -n "__fish_userdrop_using_subcommand backup" -l cache-mb -d 'sled\'s page cache, in MiB (at least 1)' -r
complete -c userdrop -n "__fish_userdrop_using_subcommand backup" -l log-level -d 'Log level for stderr (overridden by RUST_LOG)' -r -f -a "error\t''
warn\t''
info\t''
debug\t''
trace\t''
off\t''"
complete -c userdrop -n "__fish_userdrop_using_subcommand backup" -l log-format -d 'Log format for stderr' -r -f -a "text\t''
json\t''"
complete -c userdrop -n "__fish_userdrop_using_subcommand backup" -s h -l help -d 'Print help'
complete -c userdrop -n "__fish_userdrop_using_subcommand restore" -l config -d 'A TOML config file: a key for every option below (flags and USERDROP_* variables take precedence over it)' -r -F
complete -c userdrop -n "__fish_userdrop_using_subcommand restore" -l db -d 'The store\'s folder (created if missing; keep it outside the inbox)' -r -F
complete -c userdrop -n "__fish_userdrop_using_subcommand restore" -l store -d 'The store in PostgreSQL instead of sled in --db (SPEC §8): postgres://USER@HOST/DB, for several daemons on several hosts. --db then holds only this host\'s private copies of big requests' -r
complete -c userdrop -n "__fish_userdrop_using_subcommand restore" -l instance -d 'The name this host\'s requests are known by on a PostgreSQL store: one daemon per instance [default: the host name]' -r
complete -c userdrop -n "__fish_userdrop_using_subcommand restore" -l cache-mb -d 'sled\'s page cache, in MiB (at least 1)' -r
complete -c userdrop -n "__fish_userdrop_using_subcommand restore" -l log-level -d 'Log level for stderr (overridden by RUST_LOG)' -r -f -a "error\t''
warn\t''
info\t''
debug\t''
trace\t''
off\t''"
complete -c userdrop -n "__fish_userdrop_using_subcommand restore" -l log-format -d 'Log format for stderr' -r -f -a "text\t''
json\t''"
complete -c userdrop -n "__fish_userdrop_using_subcommand restore" -s h -l help -d 'Print help'
complete -c userdrop -n "__fish_userdrop_using_subcommand schema" -l types -d 'The schema of the daemon\'s --types: lenient also takes the forms PHP and ERP exports write' -r -f -a "strict\t'Each field of the JSON type SPEC §1\'s table gives it: "3" is not a number'
lenient\t'Also the forms PHP scripts and ERP exports write: numbers as strings, booleans as 0/1, [] for no discount card, DD.MM.YYYY dates and dates with a time, 00 for a phone\'s +'"
complete -c userdrop -n "__fish_userdrop_using_subcommand schema" -l config -d 'A TOML config file: a key for every option below (flags and USERDROP_* variables take precedence over it)' -r -F
complete -c userdrop -n "__fish_userdrop_using_subcommand schema" -l db -d 'The store\'s folder (created if missing; keep it outside the inbox)' -r -F
complete -c userdrop -n "__fish_userdrop_using_subcommand schema" -l store -d 'The store in PostgreSQL instead of sled in --db (SPEC §8): postgres://USER@HOST/DB, for several daemons on several hosts. --db then holds only this host\'s private copies of big requests' -r
complete -c userdrop -n "__fish_userdrop_using_subcommand schema" -l instance -d 'The name this host\'s requests are known by on a PostgreSQL store: one daemon per instance [default: the host name]' -r
complete -c userdrop -n "__fish_userdrop_using_subcommand schema" -l cache-mb -d 'sled\'s page cache, in MiB (at least 1)' -r
complete -c userdrop -n "__fish_userdrop_using_subcommand schema" -l log-level -d 'Log level for stderr (overridden by RUST_LOG)' -r -f -a "error\t''
warn\t''
info\t''
debug\t''
trace\t''
off\t''"
complete -c userdrop -n "__fish_userdrop_using_subcommand schema" -l log-format -d 'Log format for stderr' -r -f -a "text\t''
json\t''"
complete -c userdrop -n "__fish_userdrop_using_subcommand schema" -l strict -d 'Also every per-user value rule (mandatory title and email, patterns, ranges, lengths): a file that passes has no user rejected for them'
complete -c userdrop -n "__fish_userdrop_using_subcommand schema" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c userdrop -n "__fish_userdrop_using_subcommand completions" -l config -d 'A TOML config file: a key for every option below (flags and USERDROP_* variables take precedence over it)' -r -F
complete -c userdrop -n "__fish_userdrop_using_subcommand completions" -l db -d 'The store\'s folder (created if missing; keep it outside the inbox)' -r -F
complete -c userdrop -n "__fish_userdrop_using_subcommand completions" -l store -d 'The store in PostgreSQL instead of sled in --db (SPEC §8): postgres://USER@HOST/DB, for several daemons on several hosts. --db then holds only this host\'s private copies of big requests' -r
complete -c userdrop -n "__fish_userdrop_using_subcommand completions" -l instance -d 'The name this host\'s requests are known by on a PostgreSQL store: one daemon per instance [default: the host name]' -r
complete -c userdrop -n "__fish_userdrop_using_subcommand completions" -l cache-mb -d 'sled\'s page cache, in MiB (at least 1)' -r
complete -c userdrop -n "__fish_userdrop_using_subcommand completions" -l log-level -d 'Log level for stderr (overridden by RUST_LOG)' -r -f -a "error\t''
warn\t''
info\t''
debug\t''
trace\t''
off\t''"
complete -c userdrop -n "__fish_userdrop_using_subcommand completions" -l log-format -d 'Log format for stderr' -r -f -a "text\t''
json\t''"
complete -c userdrop -n "__fish_userdrop_using_subcommand completions" -s h -l help -d 'Print help'
complete -c userdrop -n "__fish_userdrop_using_subcommand man" -l config -d 'A TOML config file: a key for every option below (flags and USERDROP_* variables take precedence over it)' -r -F
complete -c userdrop -n "__fish_userdrop_using_subcommand man" -l db -d 'The store\'s folder (created if missing; keep it outside the inbox)' -r -F
complete -c userdrop -n "__fish_userdrop_using_subcommand man" -l store -d 'The store in PostgreSQL instead of sled in --db (SPEC §8): postgres://USER@HOST/DB, for several daemons on several hosts. --db then holds only this host\'s private copies of big requests' -r
complete -c userdrop -n "__fish_userdrop_using_subcommand man" -l instance -d 'The name this host\'s requests are known by on a PostgreSQL store: one daemon per instance [default: the host name]' -r
complete -c userdrop -n "__fish_userdrop_using_subcommand man" -l cache-mb -d 'sled\'s page cache, in MiB (at least 1)' -r
complete -c userdrop -n "__fish_userdrop_using_subcommand man" -l log-level -d 'Log level for stderr (overridden by RUST_LOG)' -r -f -a "error\t''
warn\t''
info\t''
debug\t''
trace\t''
off\t''"
complete -c userdrop -n "__fish_userdrop_using_subcommand man" -l log-format -d 'Log format for stderr' -r -f -a "text\t''
json\t''"
complete -c userdrop -n "__fish_userdrop_using_subcommand man" -s h -l help -d 'Print help'
complete -c userdrop -n "__fish_userdrop_using_subcommand config" -l watch -d 'The inbox folder' -r -F
complete -c userdrop -n "__fish_userdrop_using_subcommand config" -l poll -d 'Poll the inbox every MS milliseconds instead of using inotify events (for NFS/SMB/FUSE mounts, where events do not arrive)' -r
complete -c userdrop -n "__fish_userdrop_using_subcommand config" -l rescan -d 'Full rescan of the inbox every SECS seconds, in both modes, so that no file is missed after an event-queue overflow' -r
complete -c userdrop -n "__fish_userdrop_using_subcommand config" -l settle -d 'How long a file that does not parse must stay unchanged before it gets ERROR, in milliseconds (a partial upload is waited for until then)' -r
complete -c userdrop -n "__fish_userdrop_using_subcommand config" -l archive -d 'Move each request and its response, once both are older than --archive-after, into DIR/YYYY-MM-DD/ (the day the response was written, UTC), the request first. DIR is created (0750) if missing; it must be outside the inbox and on its file system and mount' -r -F
complete -c userdrop -n "__fish_userdrop_using_subcommand config" -l archive-after -d 'How old a request and its response must both be before --archive moves them: a whole number and a unit, s, m, h or d (90s, 15m, 12h, 7d)' -r
complete -c userdrop -n "__fish_userdrop_using_subcommand config" -l delete-after -d 'Delete each request and its response once both are older than this (90s, 15m, 12h, 7d), the request first; the store\'s history keeps their record. Not with --archive' -r
complete -c userdrop -n "__fish_userdrop_using_subcommand config" -l token -d 'A token requests must carry (repeatable). With none, `token` is optional and ignored' -r
complete -c userdrop -n "__fish_userdrop_using_subcommand config" -l token-file -d 'A file of tokens, one a line (blank lines and lines starting with # are ignored), added to --token: it keeps them out of the process list. Read at start and again on SIGHUP' -r -F
complete -c userdrop -n "__fish_userdrop_using_subcommand config" -l max-file-size -d 'Files larger than this are rejected with ERROR without being read' -r
complete -c userdrop -n "__fish_userdrop_using_subcommand config" -l lang -d 'Language of the response messages' -r -f -a "en\t'English'
uk\t'Ukrainian (українська)'
ru\t'Russian (русский)'"
complete -c userdrop -n "__fish_userdrop_using_subcommand config" -l types -d 'How field types are read: strict as SPEC §1\'s table, or lenient to take the forms PHP and ERP exports write ("3", 0/1, [], 31.12.2025, 00380...)' -r -f -a "strict\t'Each field of the JSON type SPEC §1\'s table gives it: "3" is not a number'
lenient\t'Also the forms PHP scripts and ERP exports write: numbers as strings, booleans as 0/1, [] for no discount card, DD.MM.YYYY dates and dates with a time, 00 for a phone\'s +'"
complete -c userdrop -n "__fish_userdrop_using_subcommand config" -l step-users -d 'Users written per atomic step (a step also ends after 64 times as many were judged, for files mostly unchanged); bounds memory and what a crash can cut short' -r
complete -c userdrop -n "__fish_userdrop_using_subcommand config" -l metrics-file -d 'Write Prometheus metrics (text format, for node_exporter\'s textfile collector) to this file after every processed file (run and import)' -r -F
complete -c userdrop -n "__fish_userdrop_using_subcommand config" -l config -d 'A TOML config file: a key for every option below (flags and USERDROP_* variables take precedence over it)' -r -F
complete -c userdrop -n "__fish_userdrop_using_subcommand config" -l db -d 'The store\'s folder (created if missing; keep it outside the inbox)' -r -F
complete -c userdrop -n "__fish_userdrop_using_subcommand config" -l store -d 'The store in PostgreSQL instead of sled in --db (SPEC §8): postgres://USER@HOST/DB, for several daemons on several hosts. --db then holds only this host\'s private copies of big requests' -r
complete -c userdrop -n "__fish_userdrop_using_subcommand config" -l instance -d 'The name this host\'s requests are known by on a PostgreSQL store: one daemon per instance [default: the host name]' -r
complete -c userdrop -n "__fish_userdrop_using_subcommand config" -l cache-mb -d 'sled\'s page cache, in MiB (at least 1)' -r
complete -c userdrop -n "__fish_userdrop_using_subcommand config" -l log-level -d 'Log level for stderr (overridden by RUST_LOG)' -r -f -a "error\t''
warn\t''
info\t''
debug\t''
trace\t''
off\t''"
complete -c userdrop -n "__fish_userdrop_using_subcommand config" -l log-format -d 'Log format for stderr' -r -f -a "text\t''
json\t''"
complete -c userdrop -n "__fish_userdrop_using_subcommand config" -l json -d 'Print JSON instead of a table'
complete -c userdrop -n "__fish_userdrop_using_subcommand config" -l once -d 'Process the requests waiting in the inbox, then exit'
complete -c userdrop -n "__fish_userdrop_using_subcommand config" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c userdrop -n "__fish_userdrop_using_subcommand help; and not __fish_seen_subcommand_from run import check get export stats delete backup restore schema completions man config help" -f -a "run" -d 'Watch the inbox and process every request dropped there (the default command)'
complete -c userdrop -n "__fish_userdrop_using_subcommand help; and not __fish_seen_subcommand_from run import check get export stats delete backup restore schema completions man config help" -f -a "import" -d 'Apply these request files now; write each response beside its file'
complete -c userdrop -n "__fish_userdrop_using_subcommand help; and not __fish_seen_subcommand_from run import check get export stats delete backup restore schema completions man config help" -f -a "check" -d 'Validate files against the store and print the would-be responses; change nothing'
complete -c userdrop -n "__fish_userdrop_using_subcommand help; and not __fish_seen_subcommand_from run import check get export stats delete backup restore schema completions man config help" -f -a "get" -d 'Print the stored user with this email as JSON; exit 1 if there is none'
complete -c userdrop -n "__fish_userdrop_using_subcommand help; and not __fish_seen_subcommand_from run import check get export stats delete backup restore schema completions man config help" -f -a "export" -d 'Print every stored user, sorted by email'
complete -c userdrop -n "__fish_userdrop_using_subcommand help; and not __fish_seen_subcommand_from run import check get export stats delete backup restore schema completions man config help" -f -a "stats" -d 'Count the stored users and the processed files by status'
complete -c userdrop -n "__fish_userdrop_using_subcommand help; and not __fish_seen_subcommand_from run import check get export stats delete backup restore schema completions man config help" -f -a "delete" -d 'Erase these users from the store (the right to erasure); exit 1 if none was stored. Names the files in the inbox that still mention them'
complete -c userdrop -n "__fish_userdrop_using_subcommand help; and not __fish_seen_subcommand_from run import check get export stats delete backup restore schema completions man config help" -f -a "backup" -d 'Write a consistent, full snapshot of the store (users with their meta, the file history, the counters) to FILE; works while the daemon runs'
complete -c userdrop -n "__fish_userdrop_using_subcommand help; and not __fish_seen_subcommand_from run import check get export stats delete backup restore schema completions man config help" -f -a "restore" -d 'Load a backup into an empty store'
complete -c userdrop -n "__fish_userdrop_using_subcommand help; and not __fish_seen_subcommand_from run import check get export stats delete backup restore schema completions man config help" -f -a "schema" -d 'Print a JSON Schema (draft 2020-12) of the request file, for editors and CI'
complete -c userdrop -n "__fish_userdrop_using_subcommand help; and not __fish_seen_subcommand_from run import check get export stats delete backup restore schema completions man config help" -f -a "completions" -d 'Print a shell completion script'
complete -c userdrop -n "__fish_userdrop_using_subcommand help; and not __fish_seen_subcommand_from run import check get export stats delete backup restore schema completions man config help" -f -a "man" -d 'Print the man page (roff)'
complete -c userdrop -n "__fish_userdrop_using_subcommand help; and not __fish_seen_subcommand_from run import check get export stats delete backup restore schema completions man config help" -f -a "config" -d 'Print the effective configuration: every setting, its value and where it comes from (flag, env, file or default). Tokens are counted, never shown'
complete -c userdrop -n "__fish_userdrop_using_subcommand help; and not __fish_seen_subcommand_from run import check get export stats delete backup restore schema completions man config help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
