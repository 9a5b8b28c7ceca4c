# cachefleet harness, sourced by Valkey's test client (tests/support/valkey.tcl) when the suite
# runs against an agent: CONFIG SET, GET and RESETSTAT and DEBUG, which an agent does not take
# from its clients (they reconfigure shards every pod shares), are sent by the harness itself to
# every shard of the agent (CF_SUITE_SHARDS, comma-separated ports). The first shard that
# accepts answers; when none does, the first one's error is raised. Nothing else is answered.
# A deferring client reads its replies later: the harness sends the agent a PING with a token
# in the command's place and, when that PING's reply is read, gives the shards' answer
# instead, so replies stay in the order the client sent its commands.

proc ::valkey::cf_admin {id method argv} {
    if {![info exists ::env(CF_SUITE_SHARDS)] || $::env(CF_SUITE_SHARDS) eq {} || [info exists ::cf_in_harness]} {return 0}
    if {!$::valkey::blocking($id) || $::valkey::readraw($id)} {return 0}
    set m [string tolower $method]
    if {$m eq "debug"} {return 1}
    return [expr {$m eq "config" && [lsearch -nocase {set get resetstat} [lindex $argv 0]] >= 0}]
}

proc ::valkey::cf_to_shards {method argv} {
    set ::cf_in_harness 1
    set ok 0
    set first_err {}
    set result {}
    foreach port [split $::env(CF_SUITE_SHARDS) ,] {
        set c [valkey 127.0.0.1 $port]
        if {[catch {$c $method {*}$argv} r]} {
            if {$first_err eq {}} {set first_err $r}
        } elseif {!$ok} {
            set ok 1
            set result $r
        }
        $c close
    }
    unset ::cf_in_harness
    if {!$ok} {return -code error $first_err}
    return $result
}

proc ::valkey::cf_answer {id method argv} {
    if {!$::valkey::deferred($id)} {return [::valkey::cf_to_shards $method $argv]}
    set code [catch {::valkey::cf_to_shards $method $argv} result]
    set token "cf-harness-[incr ::cf_tokens]"
    set ::cf_substitute($token) [list $code $result]
    if {[info command ::valkey::cf_agent_read] eq {}} {
        rename ::valkey::__method__read ::valkey::cf_agent_read
        proc ::valkey::__method__read {id fd} {
            set reply [::valkey::cf_agent_read $id $fd]
            if {[info exists ::cf_substitute($reply)]} {
                lassign $::cf_substitute($reply) code result
                unset ::cf_substitute($reply)
                return -code $code $result
            }
            return $reply
        }
    }
    ::valkey::__dispatch__raw__ $id ping [list $token]
    return {}
}
