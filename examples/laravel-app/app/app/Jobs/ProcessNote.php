<?php

namespace App\Jobs;

use Illuminate\Bus\Queueable;
use Illuminate\Contracts\Queue\ShouldQueue;
use Illuminate\Foundation\Bus\Dispatchable;
use Illuminate\Queue\InteractsWithQueue;
use Illuminate\Support\Facades\DB;

// Run by the queue worker (`artisan queue:work` under supervisord).
class ProcessNote implements ShouldQueue
{
    use Dispatchable, InteractsWithQueue, Queueable;

    public function __construct(public int $noteId)
    {
    }

    public function handle()
    {
        DB::table('notes')->where('id', $this->noteId)->update(['processed_at' => now()]);
    }
}
