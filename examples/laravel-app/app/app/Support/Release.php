<?php

namespace App\Support;

use Illuminate\Support\Facades\DB;
use Illuminate\Support\Facades\Schema;

class Release
{
    // The first line of the REVISION file deployer writes into each release.
    public static function id(): string
    {
        $text = @file_get_contents(base_path('REVISION'));

        return $text === false ? 'unknown' : trim(strtok($text, "\n"));
    }

    // The latest batch of the migrations table: the schema version the laravel playbook uses.
    public static function schema(): int
    {
        $table = config('database.migrations');

        return Schema::hasTable($table) ? (int) DB::table($table)->max('batch') : 0;
    }
}
